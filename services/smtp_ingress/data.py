"""The DATA stream decoded chunk by chunk: end only at CRLF.CRLF, dot-unstuffing, CRLF-only line ends, limits.

It gives exactly what aiosmtpd's line-by-line reader followed by `message.normalise_line_ends` gave (see that
module for why we normalise): lines are delimited by CRLF alone, so bare CR and bare LF never end a line and
never end the data; a leading dot is removed from every CRLF-delimited line (RFC 5321 §4.5.2); then every bare CR
and bare LF becomes CRLF. Chunks may split the input anywhere: the few bytes at the end of a chunk whose meaning
depends on what follows (a CR that may start a CRLF, a CRLF that may be followed by a dot, a partial end marker)
are held back and decoded with the next chunk.
"""

from __future__ import annotations

from collections.abc import Callable

from services.smtp_ingress.message import normalise_line_ends
from shared.spool import MessageSpool

END = b"\r\n.\r\n"
# aiosmtpd's rule (line_length_limit, 1001 octets with the CRLF): a line of 1000 octets or more before its CRLF,
# counted as received (with a stuffed dot), is too long. RFC 5322 §2.1.1 says 998; aiosmtpd let 999 through.
LINE_LIMIT = 1000

TOO_LONG = "too long"
TOO_MUCH = "too much"
SPOOL_FAILED = "spool failed"


class DataDecoder:
    """Feed it the chunks read after the 354; decoded text goes to `sink` until the end of data is found.

    As with aiosmtpd, a problem (a line too long, more than `size_limit` octets) is only recorded: the data is
    still read to its end before the reply, and nothing more goes to the sink. The first problem in the stream
    wins; a single line that is too long and also crosses the size limit counts as too long.
    """

    def __init__(self, size_limit: int | None, sink: Callable[[bytes], None]) -> None:
        self.size_limit = size_limit or None
        self.sink = sink
        self.size = 0  # octets before the final dot line, as received (what aiosmtpd compares with the limit)
        self.problem: str | None = None
        self.done = False
        # The data starts at the beginning of a line, as if right after a CRLF: a leading ".\r\n" is the end and
        # a leading dot is stuffing. This virtual CRLF is decoded like the rest and cut from the output.
        self._held = b"\r\n"
        self._first = True
        self._line = 0  # octets of the line still open at the end of what was decoded so far
        # The size limit was crossed inside the line still open: too much, unless that line turns out too long.
        self._over_in_open_line = False

    def feed(self, chunk: bytes) -> bytes:
        """Decode `chunk`; once the end of data is in it, set `done` and return the bytes after the end."""
        data = self._held + chunk if self._held else chunk
        end = data.find(END)
        if end >= 0:
            self.done = True
            self._held = b""
            self._decode(data[: end + 2])
            if self._over_in_open_line and self.problem is None:
                self.problem = TOO_MUCH  # (the last line always ends in this decode: belt and braces)
            return data[end + 5 :]
        held = _undecided_tail(data)
        if held:
            self._held = data[-held:]
            data = data[:-held]
        else:
            self._held = b""
        self._decode(data)
        return b""

    def _decode(self, raw: bytes) -> None:
        if not raw:
            return
        shift = 2 if self._first else 0  # the virtual CRLF is not message text
        before = self.size
        self.size += len(raw) - shift
        if self.problem is None:
            self._judge(raw, self._long_line(raw, before - shift))
        if self.problem is not None or self._over_in_open_line:
            self._first = False
            return
        text = normalise_line_ends(raw.replace(b"\r\n.", b"\r\n"))
        if self._first:
            self._first = False
            text = text[2:]
        self.sink(text)

    def _judge(self, raw: bytes, long_line: int | None) -> None:
        """Record the first problem, as aiosmtpd finds it reading line by line: the first line that is too long or
        whose octets cross the size limit; a line that does both is too long. A chunk may end inside the line
        that crosses the limit: whether it is too long is known only later, so the decision waits for that line."""
        limit = self.size_limit
        if limit is None:
            if long_line is not None:
                self.problem = TOO_LONG
            return
        if self._over_in_open_line:
            if long_line is not None:
                self.problem = TOO_LONG if long_line <= limit else TOO_MUCH
            elif b"\r\n" in raw:  # the line ended short
                self.problem = TOO_MUCH
            return
        over = self.size > limit
        if long_line is not None and (not over or long_line <= limit):
            self.problem = TOO_LONG
        elif over:
            if self._line and self.size - self._line <= limit:
                self._over_in_open_line = True  # crossed inside the open line
            else:
                self.problem = TOO_MUCH

    def _long_line(self, raw: bytes, origin: int) -> int | None:
        """Where (in octets from the start of the data) the first line of `raw` reaching LINE_LIMIT starts."""
        line = self._line
        if line + len(raw) < LINE_LIMIT:
            last = raw.rfind(b"\r\n")
            self._line = line + len(raw) if last < 0 else len(raw) - last - 2
            return None
        lines = raw.split(b"\r\n")
        self._line = len(lines[-1])
        if line + len(lines[0]) < LINE_LIMIT and max(map(len, lines)) < LINE_LIMIT:
            return None
        start = -line  # the first line began in an earlier chunk
        for index, text in enumerate(lines):
            length = len(text) + (line if index == 0 else 0)
            if length >= LINE_LIMIT:
                return origin + start
            start += length + 2
        return None  # pragma: no cover (one line was found long above)


def _undecided_tail(data: bytes) -> int:
    """How many bytes at the end of `data` are a proper prefix of the end marker (decoded once more is known)."""
    last = data[-1:]
    if last == b"\r":
        return 4 if data.endswith(b"\r\n.\r") else 1
    if last == b"\n":
        return 2 if data.endswith(b"\r\n") else 0
    if last == b".":
        return 3 if data.endswith(b"\r\n.") else 0
    return 0


class SpoolWriter:
    """The sink of a decoder: writes to `spool` until a write fails (e.g. the spool directory is full), then keeps
    the error, closes the spool and ignores the rest, so that the data is still read to its end."""

    def __init__(self, spool: MessageSpool) -> None:
        self.spool = spool
        self.failure: OSError | None = None

    def __call__(self, text: bytes) -> None:
        if self.failure is not None:
            return
        try:
            self.spool.write(text)
        except OSError as exc:
            self.failure = exc
            self.spool.close()
