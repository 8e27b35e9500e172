"""A ledger of every message sent into the stack: what the ingress answered, and where each copy ended up.

Each message carries a unique token in an `X-Ledger-Token` header. The sender records the reply to its DATA (250
and the queue id, or not); at the end the ledger reads the mailboxes (`scan_store`), POP3 downloads
(`scan_message`), what hostile or sink MXs accepted (`scan_mx`), and the bounces in the senders' mailboxes (RFC
3464 reports return the original's headers, token included). Then, per message and recipient:

- a message answered 250 must be delivered exactly once (a mailbox or an MX that answered 2xx) or bounced
  exactly once (a `failed` report in the sender's mailbox), not both;
- a message not answered 250 may still arrive (the broker had it, the confirm or the reply was lost): counted
  as `unconfirmed`, which is not a loss; but never twice.
"""

from __future__ import annotations

import email
import email.policy
import re
import uuid
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from email.message import Message
from typing import Any

TOKEN_HEADER = "X-Ledger-Token"
_TOKEN = re.compile(rb"^X-Ledger-Token: ([0-9a-f]{32})\r?$", re.MULTILINE | re.IGNORECASE)


@dataclass
class Sent:
    """One message handed to the ingress."""

    token: str
    sender: str
    recipients: tuple[str, ...]
    data: bytes
    accepted_rcpts: tuple[str, ...] = ()  # the recipients the ingress answered 250 at RCPT
    code: int | None = None  # the reply to the final dot; None: none came (connection lost, timeout)
    reply: str = ""
    queue_id: str = ""

    @property
    def accepted(self) -> bool:
        return self.code == 250


@dataclass
class Report:
    """Counts over (message, recipient) pairs, and what broke the promise."""

    sent: int = 0  # messages
    accepted: int = 0  # messages answered 250
    pairs: int = 0  # (message, recipient) pairs of accepted messages
    delivered: int = 0  # ... delivered once and not bounced
    bounced: int = 0  # ... bounced once and not delivered
    lost: int = 0  # ... neither
    duplicated: int = 0  # pairs (any message) with more than one outcome
    unconfirmed: int = 0  # pairs of messages not answered 250 that arrived anyway (once)
    delay_notices: int = 0
    problems: list[str] = field(default_factory=list)

    def line(self) -> str:
        return (
            f"sent={self.sent} accepted={self.accepted} pairs={self.pairs} delivered={self.delivered} "
            f"bounced={self.bounced} lost={self.lost} duplicated={self.duplicated} unconfirmed={self.unconfirmed} "
            f"delay_notices={self.delay_notices}"
        )


class Ledger:
    """See the module docstring."""

    def __init__(self) -> None:
        self.sent: dict[str, Sent] = {}
        # (token, recipient) → the places each copy or bounce was seen: {"mailbox:<addr>:<uid>", "mx:<addr>#3"}.
        self.copies: dict[tuple[str, str], set[str]] = {}
        self.bounces: dict[tuple[str, str], set[str]] = {}
        self.delays: set[tuple[str, str, str]] = set()
        self.strays: list[str] = []  # copies of a message in a mailbox that is not one of its recipients
        self._deleted: Counter[str] = Counter()  # mailbox copies POP3 deleted (a later sighting is a new copy)
        self._generation: Counter[str] = Counter()

    # -- sending --------------------------------------------------------------------------------------------------
    def message(self, sender: str, recipients: Sequence[str], size: int = 0, subject: str = "ledger") -> Sent:
        """A new message with its token; `size` pads the body (with lines that start with a dot now and then)."""
        token = uuid.uuid4().hex
        head = (
            f"From: <{sender}>\r\nTo: {', '.join(f'<{r}>' for r in recipients)}\r\nSubject: {subject} {token[:8]}\r\n"
            f"Message-ID: <{token}@ledger.test>\r\n{TOKEN_HEADER}: {token}\r\n\r\n"
        ).encode()
        line = b"The quick brown fox jumps over the lazy dog.\r\n..and a line that starts with a dot.\r\n"
        body = b"Hello.\r\n" + line * (max(0, size - len(head)) // len(line))
        sent = Sent(token, sender, tuple(recipients), head + body)
        self.sent[token] = sent
        return sent

    # -- what arrived ---------------------------------------------------------------------------------------------
    def scan_message(self, data: bytes, mailbox: str, uid: str) -> None:
        """A message seen in `mailbox` under `uid` (in Redis, or downloaded over POP3)."""
        place = f"mailbox:{mailbox.lower()}:{uid}"
        if self._deleted[place]:
            # Seen again after POP3 deleted it: the store took the same message a second time.
            self._deleted[place] -= 1
            self._generation[place] += 1
        if self._generation[place]:
            place += f"#{self._generation[place]}"
        report = _report(data)
        if report is not None:
            self._scan_report(report, data, place)
            return
        token = _token(data)
        if token is None:
            return
        sent = self.sent.get(token)
        if sent is None:
            return
        if mailbox.lower() not in {r.lower() for r in sent.recipients}:
            self.strays.append(f"{token} in {place}")
            return
        self.copies.setdefault((token, mailbox.lower()), set()).add(place)

    def deleted(self, mailbox: str, uids: Iterable[str]) -> None:
        """POP3 deleted these copies (QUIT answered +OK): seeing one again later is a second copy."""
        for uid in uids:
            self._deleted[f"mailbox:{mailbox.lower()}:{uid}"] += 1

    def _scan_report(self, report: Message, data: bytes, place: str) -> None:
        token = _token(data)
        if token is None or token not in self.sent:
            return
        for recipient, action in _report_recipients(report):
            if action == "failed":
                self.bounces.setdefault((token, recipient.lower()), set()).add(place)
            elif action == "delayed":
                self.delays.add((token, recipient.lower(), place))

    async def scan_store(self, store: Any, addresses: Iterable[str]) -> None:
        """Every message now in the mailboxes of `addresses` (a services.store.Store)."""
        for address in addresses:
            for info in await store.mailboxes.snapshot(address):
                data = await store.mailboxes.read(address, info.uid)
                if data is not None:
                    self.scan_message(data, address, info.uid)

    def scan_mx(self, mx: Any) -> None:
        """Every transaction a HostileMX answered 2xx, a copy per recipient."""
        for index, transaction in enumerate(mx.transactions):
            if not transaction.accepted:
                continue
            token = _token(transaction.data)
            if token is None or token not in self.sent:
                continue
            for recipient in transaction.recipients:
                self.copies.setdefault((token, recipient.lower()), set()).add(f"mx:{mx.address}#{index}")

    # -- the verdict ------------------------------------------------------------------------------------------------
    def outcomes(self, sent: Sent, recipient: str) -> tuple[int, int]:
        key = (sent.token, recipient.lower())
        return len(self.copies.get(key, ())), len(self.bounces.get(key, ()))

    def settled(self, tokens: Iterable[str] | None = None) -> bool:
        """True once every accepted (message, recipient) has at least one outcome."""
        for token in tokens if tokens is not None else self.sent:
            sent = self.sent[token]
            if sent.accepted and any(sum(self.outcomes(sent, r)) == 0 for r in sent.accepted_rcpts):
                return False
        return True

    def report(self, tokens: Iterable[str] | None = None) -> Report:
        report = Report(problems=[*self.strays])
        for token in tokens if tokens is not None else list(self.sent):
            sent = self.sent[token]
            report.sent += 1
            report.accepted += sent.accepted
            for recipient in sent.accepted_rcpts:
                copies, bounces = self.outcomes(sent, recipient)
                what = f"{sent.queue_id or sent.token} to {recipient} (reply {sent.code} {sent.reply!r})"
                if copies + bounces > 1:
                    report.duplicated += 1
                    places = sorted(self.copies.get((token, recipient.lower()), set()))
                    places += sorted(self.bounces.get((token, recipient.lower()), set()))
                    report.problems.append(f"duplicated: {what}: {copies} copies, {bounces} bounces {places}")
                if not sent.accepted:
                    report.unconfirmed += copies + bounces == 1
                    continue
                report.pairs += 1
                if copies + bounces == 0:
                    report.lost += 1
                    report.problems.append(f"lost: {what}")
                elif copies + bounces == 1:
                    report.delivered += copies
                    report.bounced += bounces
            report.delay_notices += sum(1 for t, _, _ in self.delays if t == token)
        return report

    def assert_exactly_once(self, tokens: Iterable[str] | None = None) -> Report:
        """Fail the test with every problem listed; returns the report when there is none."""
        report = self.report(tokens)
        assert not report.problems, f"{report.line()}\n" + "\n".join(report.problems[:50])
        return report


def _token(data: bytes) -> str | None:
    """The token in the header section (for a report: in the returned headers)."""
    found = _TOKEN.search(data)
    return found.group(1).decode() if found else None


def _report(data: bytes) -> Message | None:
    """The message as an RFC 3464 delivery status report, or None when it is not one."""
    if b"multipart/report" not in data[:8192].lower():
        return None
    message = email.message_from_bytes(data, policy=email.policy.compat32)
    if message.get_content_type() != "multipart/report":
        return None
    return message


def _report_recipients(report: Message) -> list[tuple[str, str]]:
    """(recipient, action) of each per-recipient block of the report's message/delivery-status part."""
    found = []
    for part in report.walk():
        if part.get_content_type() != "message/delivery-status":
            continue
        groups = part.get_payload()
        if not isinstance(groups, list):
            continue
        for group in groups[1:]:
            if not isinstance(group, Message):
                continue
            recipient = group.get("Original-Recipient") or group.get("Final-Recipient") or ""
            action = str(group.get("Action", "")).strip().lower()
            found.append((str(recipient).partition(";")[2].strip(), action))
    return found
