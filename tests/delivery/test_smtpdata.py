"""Relayed SMTP DATA sent in chunks: the same wire bytes as aiosmtplib's `data()`, without copying the body."""

from __future__ import annotations

import asyncio
import select
import socket
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiosmtplib
import pytest
import uvloop
from aiosmtplib.protocol import PERIOD_REGEX, normalize_message_line_endings

from services.delivery.outcome import Status
from services.delivery.smtpdata import CHUNK, send_data
from tests.delivery.smtpsink import Sink
from tests.delivery.test_big_message import big_message
from tests.delivery.test_remote import remote_for, send

MiB = 1 << 20
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Receiver:
    """A scripted SMTP server on 127.0.0.1: `on_data` decides what happens after the 354 reply."""

    def __init__(self, on_data: Handler) -> None:
        self.on_data = on_data
        self.wire: list[bytes] = []  # each DATA section as sent, dot-stuffed, final dot line included
        self.server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    async def start(self, small_receive_buffer: bool = False, limit: int = 1 << 20) -> Receiver:
        sock = socket.socket()
        if small_receive_buffer:
            # Inherited by accepted sockets: a receiver that stops reading fills its buffers quickly.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.bind(("127.0.0.1", 0))
        self.server = await asyncio.start_server(self._handle, sock=sock, limit=limit)
        return self

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 receiver.test ESMTP\r\n")
        try:
            while line := await reader.readline():
                command = line[:4].upper()
                if command == b"EHLO":
                    writer.write(b"250-receiver.test\r\n250 8BITMIME\r\n")
                elif command == b"DATA":
                    writer.write(b"354 go on\r\n")
                    await writer.drain()
                    await self.on_data(reader, writer)
                elif command == b"QUIT":
                    writer.write(b"221 bye\r\n")
                    break
                else:
                    writer.write(b"250 ok\r\n")
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def keep(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Take the whole DATA section, then 250."""
        data = bytearray()
        while not data.endswith(b"\r\n.\r\n") and data != b".\r\n":
            data += await reader.readuntil(b"\n")
        self.wire.append(bytes(data))
        writer.write(b"250 2.0.0 queued\r\n")

    async def discard(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Read and drop the DATA section (keeps no copy, for measuring the sender), then 250."""
        tail = b""
        while not tail.endswith(b"\r\n.\r\n"):
            chunk = await reader.read(65536)
            if not chunk:
                raise ConnectionError("sender went away")
            tail = (tail + chunk)[-5:]
        writer.write(b"250 2.0.0 queued\r\n")


@pytest.fixture
async def receivers() -> AsyncIterator[Callable[..., Awaitable[Receiver]]]:
    started: list[Receiver] = []

    async def start(on_data: Callable[[Receiver], Handler], **options: Any) -> Receiver:
        receiver = Receiver(lambda r, w: on_data(receiver)(r, w))
        started.append(receiver)
        return await receiver.start(**options)

    yield start
    for receiver in started:
        await receiver.stop()


async def client_for(port: int) -> aiosmtplib.SMTP:
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False, timeout=10)
    await client.connect()
    await client.ehlo()
    await client.mail("sender@origin.test")
    await client.rcpt("user@remote.test")
    return client


def aiosmtplib_wire(body: bytes) -> bytes:
    """What aiosmtplib's own `data()` writes after the 354 reply: the oracle for ours."""
    return PERIOD_REGEX.sub(b"..", normalize_message_line_endings(body)) + b".\r\n"


def awkward_body() -> bytes:
    """Dots, bare CR and LF, and CRLFs and dot lines cut by chunk boundaries; no final line end."""
    body = bytearray(b"Subject: edges\r\n\r\n.first\r\nbare LF\nbare CR\rx\r\n")
    body += b"a" * (CHUNK - 1 - len(body)) + b"\r\n"  # CR is the last byte of chunk 1, LF the first of chunk 2
    body += b"b" * (2 * CHUNK - len(body) - 2) + b"\r\n"  # chunk 3 starts a line...
    body += b".dot at a chunk start\r\n..two\r\n.\r\n"  # ...with a dot
    body += b"c" * (3 * CHUNK - len(body) - 1) + b"\r"  # a bare CR ends chunk 3, chunk 4 starts with a dot
    body += b".after bare CR\nlast line without an end"
    return bytes(body)


@pytest.mark.parametrize("body", [awkward_body(), big_message(MiB + 17), b"no line end at all", b".\r\n"])
async def test_the_wire_is_what_aiosmtplib_would_send(
    receivers: Callable[..., Awaitable[Receiver]], body: bytes
) -> None:
    receiver = await receivers(lambda r: r.keep)
    client = await client_for(receiver.port)
    response = await send_data(client, body, 10, 10)
    await client.quit()
    assert response.code == 250
    assert receiver.wire == [aiosmtplib_wire(body)]


async def test_a_refusal_during_data_is_heard_without_sending_the_rest(
    receivers: Callable[..., Awaitable[Receiver]],
) -> None:
    async def refuse_then_drain(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readexactly(CHUNK)
        writer.write(b"552 5.3.4 message too big for me\r\n")
        await writer.drain()
        while await reader.read(65536):  # a polite server keeps reading until the sender gives up
            pass

    receiver = await receivers(lambda r: refuse_then_drain, small_receive_buffer=True)  # the sender must wait
    client = await client_for(receiver.port)
    with pytest.raises(aiosmtplib.SMTPDataError) as refused:
        await send_data(client, big_message(8 * MiB), 10, 10)
    assert refused.value.code == 552
    assert not client.is_connected  # no QUIT into a DATA section that never got its final dot


async def test_a_250_before_the_final_dot_does_not_count_as_delivered(
    receivers: Callable[..., Awaitable[Receiver]],
) -> None:
    async def accept_too_soon(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readexactly(CHUNK)
        writer.write(b"250 2.0.0 thanks, that will do\r\n")
        await writer.drain()
        while await reader.read(65536):
            pass

    receiver = await receivers(lambda r: accept_too_soon, small_receive_buffer=True)  # the sender must wait
    client = await client_for(receiver.port)
    with pytest.raises(aiosmtplib.SMTPServerDisconnected):
        await send_data(client, big_message(8 * MiB), 10, 10)


async def test_a_receiver_that_stops_reading_times_out_and_the_client_is_closed(
    receivers: Callable[..., Awaitable[Receiver]],
) -> None:
    stalled = asyncio.Event()

    async def stall(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await stalled.wait()

    receiver = await receivers(lambda r: stall, small_receive_buffer=True)
    client = await client_for(receiver.port)
    try:
        with pytest.raises(aiosmtplib.SMTPTimeoutError):
            await send_data(client, big_message(16 * MiB), 0.5, 10)  # more than the socket buffers hold
        assert not client.is_connected
    finally:
        stalled.set()


async def test_a_disconnect_during_data_defers_the_recipient(
    receivers: Callable[..., Awaitable[Receiver]], dns_server: Any
) -> None:
    """The worst moment for a relay: the message may or may not have arrived. Retry (4.4.2), never lose it."""

    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readexactly(CHUNK)
        writer.transport.abort()

    receiver = await receivers(lambda r: hang_up)
    remote = remote_for(dns_server, transport_map=f"remote.test=[127.0.0.1]:{receiver.port}")
    [result] = await send(remote, "remote.test", "user@remote.test", message=big_message(4 * MiB))
    assert (result.status, result.enhanced) == (Status.TEMPORARY, "4.4.2"), result


def test_a_reply_that_comes_at_once_is_not_lost(sinks: Callable[..., Sink], loopback_net: str) -> None:
    """The server (in its own thread) answers the final dot before the event loop runs again: the reader must
    already be waiting then, or aiosmtplib drops the reply as unsolicited. uvloop, where this ordering showed."""
    sink = sinks(f"{loopback_net}.9")

    async def scenario() -> int:
        client = aiosmtplib.SMTP(hostname=sink.address, port=sink.port, start_tls=False, timeout=10)
        await client.connect()
        await client.ehlo()
        await client.mail("sender@origin.test")
        await client.rcpt("user@remote.test")
        protocol = client.protocol
        assert protocol is not None and protocol.transport is not None
        fd = protocol.transport.get_extra_info("socket").fileno()
        write = protocol.write

        def write_then_wait_for_the_reply(data: bytes) -> None:
            write(data)
            if data.endswith(b".\r\n"):
                select.select([fd], [], [], 10)  # blocks the loop until the reply is in the socket

        protocol.write = write_then_wait_for_the_reply  # type: ignore[method-assign]
        response = await send_data(client, b"Subject: quick\r\n\r\nhello\r\n", 10, 5)
        await client.quit()
        return response.code

    assert uvloop.run(scenario()) == 250
    assert [r.content for r in sink.received] == [b"Subject: quick\r\n\r\nhello\r\n"]


def test_relaying_a_big_body_copies_none_of_it() -> None:
    """aiosmtplib's `data()` peaks at 4.1x the body (line ends, dot-stuffing, final dot: whole copies); chunks
    cost a few times 64 KiB. On uvloop, as the service runs; the receiver in the same loop keeps nothing."""
    size = 8 * MiB
    body = big_message(size)
    assert uvloop.run(_traced_relay(body)) < 0.25 * size


async def _traced_relay(body: bytes) -> int:
    # A small stream buffer: the receiver's own reading (traced too) stays small next to the body.
    receiver = await Receiver(lambda r, w: receiver.discard(r, w)).start(limit=16384)
    try:
        client = await client_for(receiver.port)
        tracemalloc.start()
        try:
            response = await send_data(client, body, 10, 10)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        await client.quit()
        assert response.code == 250
        return peak
    finally:
        await receiver.stop()
