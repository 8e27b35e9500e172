"""PROXY protocol (v1 and v2) in front of POP3: the client address in the header is the one the session uses."""

from __future__ import annotations

import asyncio
import ipaddress
import struct

from services.pop3 import replies
from services.pop3.server import Pop3Server
from tests.helpers import client_tls
from tests.pop3.conftest import PASSWORD, USER, Client, StartServer

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


def v2_header(source: str, source_port: int = 40000, destination: str = "127.0.0.1", port: int = 110) -> bytes:
    """A PROXY v2 header for a TCP over IPv4 connection (version 2, command PROXY)."""
    body = ipaddress.IPv4Address(source).packed + ipaddress.IPv4Address(destination).packed
    body += struct.pack("!HH", source_port, port)
    return V2_SIGNATURE + bytes([0x21, 0x11]) + struct.pack("!H", len(body)) + body


async def connect_proxied(port: int, header: bytes, tls: bool = False) -> Client:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
    writer.write(header)
    await writer.drain()
    if tls:
        await writer.start_tls(client_tls())
    client = Client(reader, writer)
    greeting = await client.line()
    assert greeting.startswith("+OK"), greeting
    return client


async def test_v1_header_makes_the_client_remote_so_plaintext_login_is_refused(
    start_pop3: StartServer, account: str
) -> None:
    server: Pop3Server = await start_pop3(pop3_proxy_protocol=True)
    header = b"PROXY TCP4 203.0.113.7 127.0.0.1 40000 110\r\n"
    client = await connect_proxied(server.ports["pop3"], header)
    # Over loopback a plaintext USER is allowed; from 203.0.113.7 (the real client) it is not.
    assert await client.cmd(f"USER {USER}") == "-ERR " + replies.ERR_PLAINTEXT_DISALLOWED.text
    await client.close()


async def test_v2_header_over_pop3s_then_login_works(start_pop3: StartServer, account: str) -> None:
    server = await start_pop3(pop3_proxy_protocol=True)
    client = await connect_proxied(server.ports["pop3s"], v2_header("198.51.100.9"), tls=True)
    assert (await client.login(USER, PASSWORD)).startswith("+OK")
    assert (await client.cmd("QUIT")).startswith("+OK")
    await client.close()


async def test_local_v1_unknown_keeps_the_connection_address(start_pop3: StartServer, account: str) -> None:
    server = await start_pop3(pop3_proxy_protocol=True)
    client = await connect_proxied(server.ports["pop3"], b"PROXY UNKNOWN\r\n")
    assert (await client.login(USER, PASSWORD)).startswith("+OK")  # loopback: plaintext allowed
    await client.close()


async def test_missing_or_malformed_header_closes_without_a_greeting(start_pop3: StartServer) -> None:
    server = await start_pop3(pop3_proxy_protocol=True, pop3_proxy_protocol_timeout=2.0)
    for opening in (b"USER alice\r\n", b"PROXY TCP4 not-an-ip 127.0.0.1 1 2\r\n", b"PROXY " + b"x" * 5000):
        reader, writer = await asyncio.open_connection("127.0.0.1", server.ports["pop3"])
        writer.write(opening)
        await writer.drain()
        assert await asyncio.wait_for(reader.read(100), 10) == b""
        writer.close()
    # A client that sends nothing is dropped after the header timeout, still without a greeting.
    reader, writer = await asyncio.open_connection("127.0.0.1", server.ports["pop3"])
    assert await asyncio.wait_for(reader.read(100), 10) == b""
    writer.close()
