"""Dovecot maildirs: the INBOX's messages with the POP3 UIDLs Dovecot served for them, and maildirs written back.

Dovecot keeps the IMAP UID of each file in `dovecot-uidlist` (version 3, Dovecot 1.1 and later):

    3 V1275660208 N25022 G3085f01b7f11094c501100008c4a11c1      version, UIDVALIDITY, next UID, mailbox GUID
    25020 :1275660208.M364837P9451.host,S=1200,W=1234           UID, then " :" and the file's base name
    25021 W1234 P00Y8sDHr O1 :1275660209.M1P2.host              UID, extension fields, " :" base name

Record fields (Dovecot's maildir-uidlist.h): S physical size, W virtual size (CRLF line ends), P the POP3 UIDL
overriding pop3_uidl_format (P with no value: the base file name), O POP3 order (lower first, then the ones
without), G the message GUID (default: the base file name). The base name is the file name up to `:` (the flags
part, `:2,S`). Dovecot's POP3 serves P when present, else pop3_uidl_format expanded (its default `%08Xu%08Xv`: UID
then UIDVALIDITY, eight lower-case hex digits each, despite the X).
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from services.store.migrate.message import Candidate, read_file, valid_uidl

UIDLIST = "dovecot-uidlist"
# Dovecot 2.3's default (doveconf -d pop3_uidl_format).
DEFAULT_UIDL_FORMAT = "%08Xu%08Xv"
_VARIABLE = re.compile(r"%(0?)(\d*)([XLU]?)([uvfg%])")


class MaildirError(ValueError):
    """The source as a whole cannot be read as a maildir (one bad message is a Candidate's problem instead)."""


@dataclass(frozen=True)
class Record:
    uid: int
    fields: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class UidList:
    uidvalidity: int
    records: dict[str, Record]  # by base file name


def base_name(name: str) -> str:
    return name.split(":", 1)[0]


def expand_uidl(fmt: str, uid: int, uidvalidity: int, base: str, guid: str) -> str:
    """pop3_uidl_format for one message: %u UID, %v UIDVALIDITY, %f base file name, %g GUID, with Dovecot's
    modifiers (0 and a width pad, X hexadecimal in lower case, L and U case). %m (a header MD5 Dovecot computes
    itself) is not supported: check_uidl_format refuses it before anything is imported."""

    def one(match: re.Match[str]) -> str:
        zero, width, modifier, name = match.groups()
        if name == "%":
            return "%"
        values: dict[str, int | str] = {"u": uid, "v": uidvalidity, "f": base, "g": guid}
        value = values[name]
        if modifier == "X" and isinstance(value, int):
            text = f"{value:x}"  # lower case, as Dovecot's var_expand writes it (checked against Dovecot 2.3)
        else:
            text = str(value)
            text = text.lower() if modifier == "L" else text.upper() if modifier == "U" else text
        return text.rjust(int(width), "0" if zero else " ") if width else text

    return _VARIABLE.sub(one, fmt)


def check_uidl_format(fmt: str) -> None:
    leftover = _VARIABLE.sub("", fmt)
    if "%" in leftover:
        raise MaildirError(f"UIDL format {fmt!r}: only %u, %v, %f, %g (with 0, width, X, L, U) are supported")


def parse_uidlist(text: str) -> UidList:
    lines = text.splitlines()
    header = lines[0].split() if lines else []
    if not header or header[0] != "3":
        version = header[0] if header else "none"
        raise MaildirError(f"{UIDLIST}: version {version} is not supported (Dovecot 1.1 and later write 3)")
    values = {token[0]: token[1:] for token in header[1:] if token}
    try:
        uidvalidity = int(values.get("V", ""))
    except ValueError:
        raise MaildirError(f"{UIDLIST}: no UIDVALIDITY in its header") from None
    records: dict[str, Record] = {}
    for number, line in enumerate(lines[1:], start=2):
        head, sep, name = line.partition(" :")
        parts = head.split()
        if not sep or not parts or not parts[0].isdigit():
            if line.strip():
                raise MaildirError(f"{UIDLIST} line {number}: not `UID [fields] :name`")
            continue
        fields = {token[0]: token[1:] for token in parts[1:]}
        records[base_name(name)] = Record(int(parts[0]), fields)
    return UidList(uidvalidity, records)


def _files(root: Path) -> dict[str, Path]:
    """The messages of new/ and cur/ by base name (names starting with a dot are not messages: maildir(5))."""
    found: dict[str, Path] = {}
    for sub in ("cur", "new"):
        directory = root / sub
        if not directory.is_dir():
            continue
        for entry in sorted(directory.iterdir()):
            if not entry.name.startswith(".") and entry.is_file():
                found.setdefault(base_name(entry.name), entry)
    return found


def _size_problem(name: str, record: Record | None, data: bytes) -> str | None:
    """A file whose size differs from the one its name or the uidlist records was cut short (or changed)."""
    sizes = dict(re.findall(r",([SW])=(\d+)", base_name(name)))
    if record is not None:
        sizes = {key: record.fields[key] for key in "SW" if key in record.fields} | sizes
    if "S" in sizes and int(sizes["S"]) != len(data):
        return f"is {len(data)} bytes, its maildir name says S={sizes['S']} (truncated copy?)"
    # Dovecot's virtual size: every LF not preceded by CR counts one more byte (RETR sends CRLF).
    virtual = len(data) + data.count(b"\n") - data.count(b"\r\n")
    if "W" in sizes and int(sizes["W"]) != virtual:
        return f"is {virtual} bytes with CRLF line ends, Dovecot recorded W={sizes['W']} (truncated copy?)"
    return None


def read_maildir(root: Path, uidl_format: str = DEFAULT_UIDL_FORMAT) -> Iterator[Candidate]:
    """The INBOX messages of a maildir in Dovecot's POP3 order, each with the UIDL Dovecot's POP3 served for it
    (None for files Dovecot has not listed yet: no client can have seen them). The maildir is checked now, each
    file read only when its turn comes (a large maildir is never held whole)."""
    check_uidl_format(uidl_format)
    if not (root / "cur").is_dir() and not (root / "new").is_dir():
        raise MaildirError(f"{root} is not a maildir (it has no cur/ or new/)")
    uidlist = UidList(0, {})
    if (root / UIDLIST).exists():
        try:
            uidlist = parse_uidlist((root / UIDLIST).read_text("utf-8", "surrogateescape"))
        except OSError as exc:
            raise MaildirError(f"{root / UIDLIST} cannot be read: {exc.strerror or exc}") from None
    files = _files(root)
    known = sorted(
        (name for name in files if name in uidlist.records),
        key=lambda name: _order(uidlist.records[name]),
    )
    unknown = [name for name in files if name not in uidlist.records]
    return (_candidate(root, files[name], uidlist, uidl_format) for name in [*known, *sorted(unknown)])


def _order(record: Record) -> tuple[int, int, int]:
    order = record.fields.get("O", "")
    return (0, int(order), record.uid) if order.isdigit() else (1, 0, record.uid)


def _candidate(root: Path, path: Path, uidlist: UidList, uidl_format: str) -> Candidate:
    origin = str(path.relative_to(root))
    base = base_name(path.name)
    record = uidlist.records.get(base)
    uidl = None
    if record is not None:
        pop3 = record.fields.get("P")
        if pop3 is not None:
            uidl = pop3 or base
        else:
            uidl = expand_uidl(uidl_format, record.uid, uidlist.uidvalidity, base, record.fields.get("G") or base)
        if not valid_uidl(uidl):
            return Candidate(origin, uidl, None, f"its UIDL {uidl!r} is not 1-70 printable characters (RFC 1939)")
    data, problem = read_file(path)
    if data is not None and problem is None:
        problem = _size_problem(path.name, record, data)
    return Candidate(origin, uidl, None if problem else data, problem)


class MaildirWriter:
    """Writes messages into a new maildir the maildir way (tmp/, then a rename into cur/), and at the end a
    dovecot-uidlist whose P fields keep every message's UIDL, whatever pop3_uidl_format the Dovecot reading it has.
    All of it is built in a hidden directory beside the destination and renamed into place by `finish`."""

    def __init__(self, root: Path) -> None:
        if root.exists() and (not root.is_dir() or any(root.iterdir())):
            raise MaildirError(f"{root} exists and is not an empty directory")
        self.root = root
        self.work = root.parent / f".{root.name}.{os.getpid()}.tmp"
        for sub in ("tmp", "new", "cur"):
            (self.work / sub).mkdir(parents=True)
        self.lines: list[str] = []
        self._host = socket.gethostname().replace("/", "\\057").replace(":", "\\072")
        self._stamp = int(time.time())

    def add(self, uidl: str, data: bytes) -> None:
        uid = len(self.lines) + 1
        base = f"{self._stamp}.M{uid}P{os.getpid()}.{self._host},S={len(data)},W={len(data)}"
        temporary = self.work / "tmp" / base
        with temporary.open("wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        temporary.rename(self.work / "cur" / f"{base}:2,")
        self.lines.append(f"{uid} P{uidl} W{len(data)} :{base}")

    def finish(self) -> None:
        header = f"3 V{self._stamp} N{len(self.lines) + 1} G{uuid.uuid4().hex}"
        (self.work / UIDLIST).write_text("\n".join([header, *self.lines]) + "\n")
        if self.root.exists():
            self.root.rmdir()  # empty, checked at the start
        self.work.rename(self.root)

    def abandon(self) -> None:
        shutil.rmtree(self.work, ignore_errors=True)
