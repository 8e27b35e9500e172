"""One client connection as an asyncio protocol: bounded line reading, flow-controlled writes and STLS upgrade."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from typing import cast

from services.pop3 import metrics


class LineTooLong(Exception):
    """A client line exceeded the limit; it has been discarded up to and including its line end."""


class ConnectionClosed(Exception):
    """The peer went away while we were writing."""


class Connection(asyncio.Protocol):
    """Input is buffered up to a high-water mark (then the socket is paused), so pipelining cannot grow memory."""

    def __init__(self, on_connect: Callable[[Connection], None], line_limit: int) -> None:
        self._on_connect = on_connect
        self.line_limit = line_limit
        self._high_water = max(65536, 2 * line_limit)
        self._buffer = bytearray()
        self._discarding = False
        self._eof = False
        self._reading_paused = False
        self._data_waiter: asyncio.Future[None] | None = None
        self._writing_paused = False
        self._drain_waiter: asyncio.Future[None] | None = None
        self.transport: asyncio.Transport | None = None
        self._out: list[bytes] = []
        self.queued = 0
        self.closed = False

    # -- asyncio.Protocol --------------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        self._on_connect(self)

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if len(self._buffer) > self._high_water and not self._reading_paused and self.transport is not None:
            self._reading_paused = True
            self.transport.pause_reading()
        self._wake_reader()

    def eof_received(self) -> bool:
        self._eof = True
        self._wake_reader()
        # Keep the write side open after a client's half-close (`printf 'STAT\r\nQUIT\r\n' | nc`): the replies
        # to what it sent are still owed. TLS cannot half-close, so there the transport closes as usual.
        return self.transport is not None and self.transport.get_extra_info("ssl_object") is None

    def connection_lost(self, exc: Exception | None) -> None:
        self._eof = True
        self.closed = True
        self._wake_reader()
        self._wake_writer()

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        self._wake_writer()

    def _wake_reader(self) -> None:
        if self._data_waiter is not None and not self._data_waiter.done():
            self._data_waiter.set_result(None)

    def _wake_writer(self) -> None:
        if self._drain_waiter is not None and not self._drain_waiter.done():
            self._drain_waiter.set_result(None)

    # -- reading -----------------------------------------------------------------------------------------------
    def _take_line(self) -> bytes | None:
        """A complete line from the buffer, or None; an over-long line is dropped as it arrives, never kept."""
        if not self._discarding:
            end = self._buffer.find(b"\n", 0, self.line_limit)
            if end >= 0:
                line = bytes(self._buffer[: end + 1])
                del self._buffer[: end + 1]
                return line
            if len(self._buffer) < self.line_limit:
                return None
            self._discarding = True
        # Discarding: everything up to the next line end goes, whatever its length (each byte is scanned once).
        end = self._buffer.find(b"\n")
        if end < 0:
            del self._buffer[:]
            return None
        del self._buffer[: end + 1]
        self._discarding = False
        raise LineTooLong()

    def _maybe_resume(self) -> None:
        if self._reading_paused and len(self._buffer) <= self._high_water // 2 and self.transport is not None:
            self._reading_paused = False
            self.transport.resume_reading()

    def buffered_line(self) -> bytes | None:
        """The next line if it is already here (no wait, so no timer is needed); LineTooLong as `readline`."""
        try:
            return self._take_line()
        finally:
            self._maybe_resume()

    async def readline(self) -> bytes | None:
        """The next line with its line end; None at end of input; LineTooLong for an over-long line."""
        while (line := self.buffered_line()) is None:
            if self._eof:
                return None
            await self._more_data()
        return line

    async def _wait_for(self, count: int) -> None:
        """Wait until `count` bytes are buffered; ConnectionClosed if the input ends first."""
        while len(self._buffer) < count:
            if self._eof:
                raise ConnectionClosed()
            await self._more_data()

    async def _more_data(self) -> None:
        """Wait until `data_received` or the end of input wakes us."""
        self._data_waiter = asyncio.get_running_loop().create_future()
        try:
            await self._data_waiter
        finally:
            self._data_waiter = None

    # The three reads aiosmtpd's PROXY protocol parser needs (its AsyncReader protocol), bounded by the line limit.
    async def readexactly(self, n: int) -> bytes:
        if n > self._high_water:
            raise LineTooLong()
        await self._wait_for(n)
        data = bytes(self._buffer[:n])
        del self._buffer[:n]
        self._maybe_resume()
        return data

    async def read(self, n: int = -1) -> bytes:
        await self._wait_for(1)
        n = len(self._buffer) if n < 0 else min(n, len(self._buffer))
        return await self.readexactly(n)

    async def readuntil(self, separator: bytes = b"\n") -> bytes:
        while (end := self._buffer.find(separator, 0, self.line_limit)) < 0:
            if len(self._buffer) >= self.line_limit:
                raise LineTooLong()
            await self._wait_for(len(self._buffer) + 1)
        return await self.readexactly(end + len(separator))

    def has_buffered_line(self) -> bool:
        """True when another pipelined command is already waiting (so a flush can be deferred)."""
        return self._buffer.find(b"\n", 0, self.line_limit) >= 0

    def buffered_lines(self, limit: int) -> list[bytes]:
        """Up to `limit` complete lines already received after the current one, left in the buffer (a peek)."""
        lines: list[bytes] = []
        start = 0
        while len(lines) < limit:
            end = self._buffer.find(b"\n", start, start + self.line_limit)
            if end < 0:
                break
            lines.append(bytes(self._buffer[start : end + 1]))
            start = end + 1
        return lines

    # -- writing -----------------------------------------------------------------------------------------------
    def write(self, data: bytes) -> None:
        """Queue output; it goes to the socket at the next `flush` or `drain` (one send for many replies)."""
        if self.closed or self.transport is None or self.transport.is_closing():
            raise ConnectionClosed()
        self._out.append(data)
        self.queued += len(data)

    def flush(self) -> None:
        if self._out and self.transport is not None and not self.transport.is_closing():
            self.transport.write(b"".join(self._out))
            metrics.SENT_BYTES.inc(self.queued)  # once per send, not per reply
        self._out.clear()
        self.queued = 0

    def drain_now(self) -> bool:
        """Flush; True when there is nothing to wait for (so no timer is needed), False when `drain` must run."""
        self.flush()
        return not self._writing_paused and not self.closed

    async def drain(self) -> None:
        """Flush, then wait while the socket's send buffer is over its high-water mark (a slow reader)."""
        self.flush()
        while self._writing_paused and not self.closed:
            self._drain_waiter = asyncio.get_running_loop().create_future()
            try:
                await self._drain_waiter
            finally:
                self._drain_waiter = None
        if self.closed:
            raise ConnectionClosed()

    # -- TLS ---------------------------------------------------------------------------------------------------
    async def start_tls(self, context: ssl.SSLContext, handshake_timeout: float) -> None:
        """RFC 2595 §4 / RFC 3207 §4.2 lesson: anything pipelined after STLS in plaintext is thrown away."""
        assert self.transport is not None
        del self._buffer[:]
        self._discarding = False
        loop = asyncio.get_running_loop()
        transport = await loop.start_tls(
            self.transport, self, context, server_side=True, ssl_handshake_timeout=handshake_timeout
        )
        if transport is None:
            raise ConnectionClosed()
        self.transport = transport
        # start_tls resumed reading on the raw socket; data after the handshake is ciphertext-protected and kept.
        self._reading_paused = False

    def peer(self) -> tuple[str, int]:
        info = self.transport.get_extra_info("peername") if self.transport is not None else None
        if isinstance(info, tuple) and len(info) >= 2:
            return str(info[0]), int(info[1])
        return "", 0

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.flush()
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()
