"""Reply values and their wire form: status lines, multi-line bodies, and the streamed, dot-stuffed message body."""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace

from shared.dotstuff import CRLF, TERMINATOR, DotStuffer, LineEnds, WireBody


class Action(enum.Enum):
    """What the session does after sending a reply."""

    NONE = "none"
    CLOSE = "close"
    START_TLS = "start_tls"


@dataclass(frozen=True)
class Reply:
    """A single-line `+OK` / `-ERR` reply; `text` may start with an RFC 2449 §8 response code like `[IN-USE]`."""

    ok: bool
    text: str
    action: Action = Action.NONE

    def encode(self) -> bytes:
        status = b"+OK" if self.ok else b"-ERR"
        return status + (b" " + self.text.encode() if self.text else b"") + CRLF

    def then(self, action: Action) -> Reply:
        return replace(self, action=action)


@dataclass(frozen=True)
class MultiLine:
    """`+OK` followed by short lines (CAPA, LIST, UIDL) and the terminating dot line."""

    head: Reply
    lines: Sequence[str] = field(default_factory=tuple)

    def encode(self) -> bytes:
        body = b"".join(("." + line if line.startswith(".") else line).encode() + CRLF for line in self.lines)
        return self.head.encode() + body + TERMINATOR


@dataclass(frozen=True)
class Stream:
    """`+OK` followed by message bytes read in chunks; `top_lines` keeps the headers and that many body lines."""

    head: Reply
    chunks: AsyncIterator[bytes]
    top_lines: int | None = None
    on_complete: Callable[[], None] | None = None
    # The store recorded the body as already in wire form (MessageInfo.wire): a RETR sends its chunks as they are.
    wire: bool = False


@dataclass(frozen=True)
class Challenge:
    """A SASL continuation (RFC 5034 §4): send `+ prompt`, then hand the client's next line to `resume`."""

    prompt: str
    resume: Callable[[bytes], Awaitable[Response]]

    def encode(self) -> bytes:
        return b"+ " + self.prompt.encode() + CRLF


Response = Reply | MultiLine | Stream | Challenge


class TopLimit:
    """Passes CRLF text up to the blank line ending the headers plus `lines` body lines (RFC 1939 §7 TOP)."""

    def __init__(self, lines: int) -> None:
        self._remaining = lines
        self._in_headers = True
        self._line_start = True
        self.done = False

    def feed(self, data: bytes) -> bytes:
        if self.done:
            return b""
        position = 0
        while True:
            if not self._in_headers and self._remaining <= 0:
                self.done = True
                return data[:position]
            end = data.find(CRLF, position)
            if end < 0:
                if position < len(data):
                    self._line_start = False
                return data
            if self._in_headers and self._line_start and end == position:
                self._in_headers = False
            elif not self._in_headers:
                self._remaining -= 1
            position = end + 2
            self._line_start = True


class BodyEncoder:
    """Everything between `+OK` and the dot line of RETR/TOP: CRLF line ends, TOP cut, dot-stuffing.

    With `wire` (a body the store recorded in wire form) and no TOP, the chunks go out as they are."""

    def __init__(self, top_lines: int | None = None, wire: bool = False) -> None:
        self._ends: LineEnds | None = None if wire and top_lines is None else LineEnds()
        self._top = TopLimit(top_lines) if top_lines is not None else None
        self._stuffer: DotStuffer | WireBody = WireBody() if self._ends is None else DotStuffer()

    @property
    def done(self) -> bool:
        """True once TOP has everything it needs, so no further chunk has to be read."""
        return self._top is not None and self._top.done

    def _pass(self, data: bytes) -> bytes:
        if self._top is not None:
            data = self._top.feed(data)
        return self._stuffer.feed(data)

    def feed(self, chunk: bytes) -> bytes:
        if self._ends is None:
            return self._stuffer.feed(chunk)
        return self._pass(self._ends.feed(chunk))

    def finish(self) -> bytes:
        if self._ends is None:
            return self._stuffer.finish()
        return self._pass(self._ends.finish()) + self._stuffer.finish()


def encode_body(message: bytes, top_lines: int | None = None, wire: bool = False) -> bytes:
    """The whole wire form of a message body held in memory (tests and small messages)."""
    encoder = BodyEncoder(top_lines, wire)
    return encoder.feed(message) + encoder.finish()
