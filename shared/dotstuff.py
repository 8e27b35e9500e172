"""CRLF line ends and dot-stuffing of a message body sent chunk by chunk (POP3 RETR/TOP, relayed SMTP DATA)."""

from __future__ import annotations

CRLF = b"\r\n"
TERMINATOR = b".\r\n"


class LineEnds:
    """Turns bare CR and bare LF into CRLF across chunk boundaries, so the wire only ever carries CRLF lines."""

    def __init__(self) -> None:
        self._pending_cr = False

    def feed(self, data: bytes) -> bytes:
        if self._pending_cr:
            data = b"\r" + data
            self._pending_cr = False
        # A CR at the end may be the first half of a CRLF split across two chunks: decide on the next chunk.
        if data.endswith(b"\r"):
            data = data[:-1]
            self._pending_cr = True
        crlf = data.count(CRLF)
        if data.count(b"\n") == crlf and data.count(b"\r") == crlf:
            return data
        return data.replace(CRLF, b"\n").replace(b"\r", b"\n").replace(b"\n", CRLF)

    def finish(self) -> bytes:
        pending, self._pending_cr = self._pending_cr, False
        return CRLF if pending else b""


class DotStuffer:
    """Byte-stuffing of CRLF text (RFC 1939 §3, RFC 5321 §4.5.2): a line starting with "." gets another in front."""

    def __init__(self) -> None:
        self._line_start = True

    def feed(self, data: bytes) -> bytes:
        if not data:
            return data
        if self._line_start and data.startswith(b"."):
            data = b"." + data
        if b"\n." in data:
            data = data.replace(b"\n.", b"\n..")
        self._line_start = data.endswith(b"\n")
        return data

    def finish(self) -> bytes:
        """The end of the multi-line body: a CRLF if the message lacked a final one, then the dot line."""
        return TERMINATOR if self._line_start else CRLF + TERMINATOR
