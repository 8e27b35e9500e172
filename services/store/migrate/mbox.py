"""mbox files in and out, in the mboxrd convention.

A `From ` line starts each message, and a body line that starts with `From ` after any number of `>` carries one more
`>` (read: one fewer).

Reading the older mboxo convention the same way is the usual choice (Python's mailbox, mutt and Dovecot do):
mboxo quoted only `From ` itself, so a body line `>From ` of such a file loses its `>`, which changes no message
a reader sees.
"""

from __future__ import annotations

import email.utils
import os
import re
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import BinaryIO

from services.store.migrate.message import Candidate, problem_of

_QUOTED_FROM = re.compile(rb"^>+From ")
_NEEDS_QUOTE = re.compile(rb"^>*From ")


class MboxError(ValueError):
    """The file as a whole is not an mbox."""


def read_mbox(path: Path) -> Iterator[Candidate]:
    """The messages of an mbox file, one at a time (a large mbox is never held whole)."""
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise MboxError(f"{path} cannot be read: {exc.strerror or exc}") from None
    with handle:
        first = handle.readline()
        if not first.startswith(b"From "):
            raise MboxError(f"{path} is not an mbox file (it does not start with a `From ` line)")
        number = 1
        lines: list[bytes] = []
        for line in handle:
            if line.startswith(b"From "):
                yield _message(path, number, lines)
                number += 1
                lines = []
            else:
                lines.append(line)
        yield _message(path, number, lines)


def _message(path: Path, number: int, lines: list[bytes]) -> Candidate:
    # The empty line an mbox writer puts after each message is the format's, not the message's.
    if lines and lines[-1] in (b"\n", b"\r\n"):
        lines = lines[:-1]
    data = b"".join(line[1:] if _QUOTED_FROM.match(line) else line for line in lines)
    problem = problem_of(data)
    return Candidate(f"{path.name} message {number}", None, None if problem else data, problem)


def envelope_line(data: bytes) -> bytes:
    """`From sender date`: the sender from Return-Path (MAILER-DAEMON for a bounce's empty one or none), the date
    from the newest Received header (when it arrived here), else Date, else now."""
    head = data.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace")
    fields = [(name.lower(), value) for name, value in _header_fields(head)]
    sender = next((v.strip().strip("<>") for n, v in fields if n == "return-path"), "") or "MAILER-DAEMON"
    sender = "".join(sender.split()) or "MAILER-DAEMON"
    stamp = None
    for name, value in fields:
        candidate = value.rsplit(";", 1)[-1] if name == "received" else value if name == "date" else None
        if candidate is not None and stamp is None:
            stamp = _parse_date(candidate)
    asctime = time.asctime(time.gmtime(stamp if stamp is not None else time.time()))
    return f"From {sender} {asctime}\n".encode()


def _header_fields(head: str) -> Iterator[tuple[str, str]]:
    name, value = "", ""
    for line in head.split("\r\n"):
        if line[:1] in (" ", "\t") and name:
            value += " " + line.strip()
            continue
        if name:
            yield name, value
        name, _, value = line.partition(":")
    if name:
        yield name, value


def _parse_date(text: str) -> float | None:
    try:
        parsed: datetime = email.utils.parsedate_to_datetime(text.strip())
    except (TypeError, ValueError, IndexError):
        return None
    return parsed.timestamp() if parsed.tzinfo is not None else None


def write_message(out: BinaryIO, data: bytes) -> None:
    """One message in mboxrd form with LF line ends, then the separating empty line."""
    out.write(envelope_line(data))
    for line in data.replace(b"\r\n", b"\n").splitlines(keepends=True):
        out.write(b">" + line if _NEEDS_QUOTE.match(line) else line)
    if not data.endswith(b"\n"):
        out.write(b"\n")
    out.write(b"\n")


class MboxWriter:
    """Writes an mbox beside its destination and renames it into place at the end: never a half-written file."""

    def __init__(self, path: Path) -> None:
        if path.exists():
            raise MboxError(f"{path} exists")
        self.path = path
        self._temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        self._out = self._temporary.open("xb")

    def add(self, uidl: str, data: bytes) -> None:
        write_message(self._out, data)  # mbox has no place for a UIDL: maildir keeps them

    def finish(self) -> None:
        self._out.flush()
        os.fsync(self._out.fileno())
        self._out.close()
        self._temporary.rename(self.path)

    def abandon(self) -> None:
        self._out.close()
        self._temporary.unlink(missing_ok=True)
