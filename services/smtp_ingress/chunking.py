"""CHUNKING (RFC 3030): BDAT's argument, and its chunks decoded to exactly the text DATA would have given.

BDAT content is raw: no dot-stuffing, no end marker. So that CHUNKING cannot behave differently from DATA in any
way that matters (line ends, smuggling, limits), a BDAT message is decoded by DATA's own decoder: the content C is
given to `DataDecoder` as the DATA stream a client would send for it, C dot-stuffed (a leading dot doubled on every
CRLF-delimited line, which the decoder takes off again) and ended by `CRLF.CRLF` (C's own final line end, if it
has one, of any kind, standing for that CRLF). The decoder then normalises every bare CR and bare LF to CRLF,
checks the line length and counts octets against the size limit as it does for DATA. Chunks may split C anywhere:
a line end at the end of a chunk, which may start a `CRLF.` with the next or be the message's last, is held back
until the next chunk (or LAST) decides it.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from services.smtp_ingress.data import SPOOL_FAILED, TOO_MUCH, DataDecoder, SpoolWriter
from shared.spool import MessageSpool

# RFC 3030 §2: bdat-cmd = "BDAT" SP chunk-size [ SP end-marker ] CRLF; chunk-size = 1*DIGIT; end-marker = "LAST"
_ARGUMENT = re.compile(r"([0-9]{1,18})(?: (LAST))?", re.IGNORECASE)
_LINE_START = b"\r\n"


def parse_bdat(arg: str | None) -> tuple[int, bool] | None:
    """(chunk size, LAST?) of BDAT's argument; None when it is not `chunk-size [LAST]`."""
    match = _ARGUMENT.fullmatch(arg or "")
    if match is None:
        return None
    return int(match[1]), match[2] is not None


class ChunkDecoder:
    """Feed it the content of every chunk of one message, then `finish` at LAST; text goes to `sink`."""

    def __init__(self, size_limit: int | None, sink: Callable[[bytes], None]) -> None:
        self.data = DataDecoder(size_limit, sink)
        # The content starts at the beginning of a line: this virtual CRLF makes a leading dot stuffable like any
        # other; it is cut from the first stuffed text handed on (DataDecoder has a virtual CRLF of its own).
        self._held = _LINE_START
        self._started = False

    @property
    def problem(self) -> str | None:
        """What makes the message unacceptable so far: a line too long, or more octets than the size limit (known
        as soon as they arrive: a too-big message is refused at the chunk that crosses the limit)."""
        data = self.data
        if data.problem is None and data.size_limit is not None and data.size > data.size_limit:
            return TOO_MUCH
        return data.problem

    def feed(self, chunk: bytes) -> None:
        if not chunk:
            return
        data = self._held + chunk
        keep = 2 if data.endswith(b"\r\n") else 1 if data.endswith((b"\r", b"\n")) else 0
        self._held = data[len(data) - keep :]
        self._emit(data[: len(data) - keep])

    def finish(self) -> None:
        """The LAST chunk was fed: end the text as DATA's `CRLF.CRLF` would. Content that ends in a line end of any
        kind (CRLF, or a bare CR or LF, which DATA would make CRLF) ends with that line; other content gets the
        CRLF DATA's end marker would have given its last line."""
        held, self._held = self._held, b""
        if held in (b"\r", b"\n"):
            held = b"\r\n"
        end = b".\r\n" if held.endswith(b"\r\n") else b"\r\n.\r\n"
        self._emit(held + end, end=len(end))
        assert self.data.done

    def _emit(self, text: bytes, end: int = 0) -> None:
        body = text[: len(text) - end].replace(b"\r\n.", b"\r\n..") + text[len(text) - end :]
        if not self._started:
            self._started = True
            body = body[len(_LINE_START) :]
        if body:
            self.data.feed(body)


class ChunkedMessage:
    """One message arriving in BDAT chunks: the spool its text goes to, and the decoder that writes it there."""

    def __init__(self, size_limit: int | None, spool: MessageSpool) -> None:
        self.spool = spool
        self.writer = SpoolWriter(spool)
        self.decoder = ChunkDecoder(size_limit, self.writer)

    @property
    def problem(self) -> str | None:
        """Why the message cannot be accepted, once known (data.py's TOO_LONG, TOO_MUCH, SPOOL_FAILED)."""
        problem = self.decoder.problem
        if problem is None and self.writer.failure is not None:
            return SPOOL_FAILED
        return problem
