"""Imports and exports through the store: each message stored by one script (all or nothing), a report of each."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Protocol

from services.store import Store, StoreOutcome
from services.store.accounts import NotFoundError
from services.store.keys import normalize_address
from services.store.mailbox import to_crlf
from services.store.migrate.message import Candidate, content_uidls


class ExportError(ValueError):
    """The destination could not be written (full, read-only, gone)."""


@dataclass(frozen=True)
class Skipped:
    origin: str
    uidl: str | None
    reason: str


@dataclass
class ImportReport:
    """What an import did: counts, and every message it did not store with the reason."""

    user: str
    source: str
    stored: int = 0
    duplicate: int = 0
    skipped: list[Skipped] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return not self.skipped

    def summary(self) -> str:
        broken = sum(1 for s in self.skipped if s.reason != "over quota")
        over = len(self.skipped) - broken
        return (
            f"imported {self.stored} into {self.user}, {self.duplicate} already there, "
            f"{broken} broken, {over} over quota (from {self.source})"
        )

    def as_json(self) -> dict[str, object]:
        return asdict(self)


async def require_user(store: Store, address: str) -> str:
    address = normalize_address(address)
    if not await store.accounts.user_exists(address):
        raise NotFoundError(f"no such user {address}")
    return address


async def import_messages(store: Store, address: str, source: str, candidates: Iterable[Candidate]) -> ImportReport:
    """Store each good candidate under its UIDL (made from its content when the source had none); a message
    already imported or still here is counted, not stored again. Repeating a whole import is always safe."""
    address = await require_user(store, address)
    report = ImportReport(address, source)
    for candidate in content_uidls(candidates):
        if candidate.data is None or candidate.uidl is None:
            report.skipped.append(Skipped(candidate.origin, candidate.uidl, candidate.problem or "unreadable"))
            continue
        outcome = await store.mailboxes.import_message(address, candidate.uidl, candidate.data)
        if outcome is StoreOutcome.STORED:
            report.stored += 1
        elif outcome is StoreOutcome.DUPLICATE:
            size = await store.mailboxes.stored_size(address, candidate.uidl)
            if size is not None and size != len(to_crlf(candidate.data)):
                # Another message holds this UIDL here (two old servers' UIDLs met): storing would hide one.
                reason = f"UIDL {candidate.uidl} already names a different message in this mailbox"
                report.skipped.append(Skipped(candidate.origin, candidate.uidl, reason))
            else:
                report.duplicate += 1
        elif outcome is StoreOutcome.OVER_QUOTA:
            report.skipped.append(Skipped(candidate.origin, candidate.uidl, "over quota"))
        else:
            raise NotFoundError(f"no such user {address} (removed during the import)")
    return report


class Writer(Protocol):
    def add(self, uidl: str, data: bytes) -> None: ...

    def finish(self) -> None: ...

    def abandon(self) -> None: ...


@dataclass
class ExportReport:
    user: str
    destination: str
    format: str
    messages: int = 0
    bytes: int = 0

    def summary(self) -> str:
        return f"exported {self.messages} messages ({self.bytes} bytes) of {self.user} to {self.destination}"


async def export_messages(store: Store, address: str, writer: Writer, report: ExportReport) -> ExportReport:
    """Every message in POP3 order, as a POP3 client would download it; one deleted meanwhile is left out.
    The caller checked that the user exists before it made the writer."""
    try:
        for info in await store.mailboxes.snapshot(address):
            data = await store.mailboxes.read(address, info.uid)
            if data is None:
                continue
            _write(writer.add, report, info.uid, data)
            report.messages += 1
            report.bytes += len(data)
        _write(lambda *_: writer.finish(), report)
    except BaseException:
        writer.abandon()  # nothing half-written is left at the destination
        raise
    return report


def _write(action: Callable[..., None], report: ExportReport, *args: object) -> None:
    try:
        action(*args)
    except OSError as exc:
        raise ExportError(f"cannot write {report.destination}: {exc.strerror or exc}") from None
