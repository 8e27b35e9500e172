"""shared/proxy.py: the header is read off the socket to its last byte and no further; PROXY on without the
balancer's networks stops a service at start."""

from __future__ import annotations

import asyncio
import socket

import pytest

from shared.proxy import ProxyHeaderError, read_header
from tests.harness import Harness
from tests.proxyclients import V1_UNKNOWN, V2_LOCAL, v1_header, v2_header

BEHIND = b"\x16\x03\x01 what the client sent next"


@pytest.mark.parametrize(
    ("header", "client"),
    [
        (v1_header("203.0.113.7"), "203.0.113.7"),
        (v1_header("2001:db8::7"), "2001:db8::7"),
        (v2_header("198.51.100.1"), "198.51.100.1"),
        (v2_header("2001:db8::1"), "2001:db8::1"),
        (V1_UNKNOWN, None),
        (V2_LOCAL, None),
    ],
)
async def test_the_header_is_consumed_exactly(header: bytes, client: str | None) -> None:
    ours, theirs = socket.socketpair()
    with ours, theirs:
        ours.setblocking(False)
        # Sent in pieces, with what follows in the same write as the header's end.
        theirs.sendall(header[:3])
        reading = asyncio.ensure_future(read_header(ours, 10))
        await asyncio.sleep(0)
        theirs.sendall(header[3:] + BEHIND)
        assert await reading == client
        ours.setblocking(True)
        assert ours.recv(100) == BEHIND


@pytest.mark.parametrize(
    "opening",
    [b"EHLO x\r\n\r\n", b"PROXY TCP4 1.2.3 4.5.6.7 1 2\r\n", b"PROXY " + b"9" * 400 + b"\r\n", b"PROXY TCP4"],
)
async def test_anything_else_is_refused(opening: bytes) -> None:
    ours, theirs = socket.socketpair()
    with ours, theirs:
        ours.setblocking(False)
        theirs.sendall(opening)
        theirs.shutdown(socket.SHUT_WR)
        with pytest.raises(ProxyHeaderError):
            await read_header(ours, 10)


async def test_silence_is_refused_at_the_timeout() -> None:
    ours, theirs = socket.socketpair()
    with ours, theirs:
        ours.setblocking(False)
        with pytest.raises(ProxyHeaderError, match="in time"):
            await read_header(ours, 0.2)


@pytest.mark.parametrize("service", ["smtp_ingress", "pop3"])
def test_proxy_protocol_without_the_balancer_networks_refuses_to_start(service: str, harness: Harness) -> None:
    flag = "POSTROOM_SMTP_PROXY_PROTOCOL" if service == "smtp_ingress" else "POSTROOM_POP3_PROXY_PROTOCOL"
    result = harness.run(service, **{flag: "true"})
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "POSTROOM_PROXY_TRUSTED_NETWORKS" in lines[0] and flag in lines[0], lines


@pytest.mark.parametrize("opening", [b"", b"PRO", b"\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x0c\x7f"])
async def test_a_connection_that_ends_early_is_refused(opening: bytes) -> None:
    ours, theirs = socket.socketpair()
    with ours:
        ours.setblocking(False)
        theirs.sendall(opening)
        theirs.close()
        with pytest.raises(ProxyHeaderError):
            await read_header(ours, 10)
