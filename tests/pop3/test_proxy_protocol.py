"""PROXY protocol (v1 and v2) in front of POP3: only the balancer may connect, the client address in the header is
the one the session and the per-IP cap use, it earns no loopback trust by itself, and 995 reads it before TLS."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import REGISTRY

from services.pop3 import replies
from services.pop3.server import Pop3Server
from services.store import Store
from tests.helpers import client_tls, wait_until
from tests.pop3.conftest import PASSWORD, USER, Client, StartServer, deliver, message
from tests.proxyclients import (
    BALANCER,
    BALANCER_NETWORK,
    OUTSIDER,
    V1_UNKNOWN,
    V2_LOCAL,
    ProxiedPOP3,
    ProxiedPOP3_SSL,
    v1_header,
    v2_header,
)

PROXIED = {"pop3_proxy_protocol": True, "proxy_trusted_networks": BALANCER_NETWORK}


async def connect_proxied(port: int, header: bytes, tls: bool = False, source: str = BALANCER) -> Client:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20, local_addr=(source, 0))
    writer.write(header)
    await writer.drain()
    if tls:
        await writer.start_tls(client_tls())
    client = Client(reader, writer)
    greeting = await client.line()
    assert greeting.startswith("+OK"), greeting
    return client


async def dropped_without_a_word(port: int, opening: bytes, source: str = BALANCER) -> bool:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    try:
        if opening:
            writer.write(opening)
            await writer.drain()
        return await asyncio.wait_for(reader.read(100), 20) == b""
    except ConnectionResetError:
        return True
    finally:
        writer.close()


def drops(reason: str) -> float:
    return REGISTRY.get_sample_value("postroom_pop3_proxy_dropped_total", {"reason": reason}) or 0.0


async def test_a_peer_outside_the_balancer_networks_is_dropped(start_pop3: StartServer) -> None:
    server: Pop3Server = await start_pop3(**PROXIED)
    before = drops("untrusted")
    for listener in ("pop3", "pop3s"):
        for opening in (v1_header("127.0.0.1", 110), v2_header("203.0.113.7", 110), b"USER alice\r\n", b""):
            assert await dropped_without_a_word(server.ports[listener], opening, source=OUTSIDER), opening
    assert drops("untrusted") == before + 8


@pytest.mark.parametrize("header", [v1_header("127.0.0.1", 110), v2_header("127.0.0.1", 110), V1_UNKNOWN, V2_LOCAL])
async def test_a_header_address_earns_no_loopback_trust(start_pop3: StartServer, account: str, header: bytes) -> None:
    # From loopback a plaintext USER is allowed; a header saying so (or saying nothing) is not believed.
    server = await start_pop3(**PROXIED)
    client = await connect_proxied(server.ports["pop3"], header)
    assert await client.cmd(f"USER {USER}") == "-ERR " + replies.ERR_PLAINTEXT_DISALLOWED.text
    await client.close()


async def test_the_operator_may_let_header_addresses_earn_loopback_trust(start_pop3: StartServer, account: str) -> None:
    server = await start_pop3(**PROXIED, proxy_trust_client_networks=True)
    client = await connect_proxied(server.ports["pop3"], v1_header("127.0.0.1", 110))
    assert (await client.login()).startswith("+OK")
    await client.close()
    for header in (v1_header("203.0.113.7", 110), V2_LOCAL):
        client = await connect_proxied(server.ports["pop3"], header)
        assert await client.cmd(f"USER {USER}") == "-ERR " + replies.ERR_PLAINTEXT_DISALLOWED.text
        await client.close()


@pytest.mark.parametrize("header", [v1_header("198.51.100.9", 995), v2_header("198.51.100.9", 995)], ids=["v1", "v2"])
async def test_pop3s_behind_the_balancer_reads_the_header_before_tls(
    start_pop3: StartServer, account: str, store: Store, header: bytes
) -> None:
    server = await start_pop3(**PROXIED)
    await deliver(store, message("over 995"))

    def fetch() -> tuple[int, list[bytes]]:
        client = ProxiedPOP3_SSL(header, server.ports["pop3s"])
        try:
            client.user(USER)
            client.pass_(PASSWORD)
            count, _ = client.stat()
            _, listing, _ = client.list()
            client.quit()
        finally:
            client.close()
        return count, listing

    count, listing = await asyncio.to_thread(fetch)
    assert count == 1 and len(listing) == 1


async def test_the_per_ip_cap_counts_revealed_clients_also_for_a_burst(start_pop3: StartServer) -> None:
    server = await start_pop3(**PROXIED, pop3_max_connections_per_ip=2)
    port = server.ports["pop3"]

    async def burst(clients: list[str]) -> list[bytes]:
        opened = [
            await asyncio.open_connection("127.0.0.1", port, local_addr=(BALANCER, 0)) for _ in range(len(clients))
        ]

        async def all_waiting() -> bool:
            return server.limiter.open == len(clients)

        await wait_until(all_waiting, what="the burst waiting for its headers")
        for (_, writer), client in zip(opened, clients, strict=True):
            writer.write(v1_header(client, 110))
        try:
            return [await asyncio.wait_for(reader.readline(), 20) for reader, _ in opened]
        finally:
            for _, writer in opened:
                writer.close()

    first = await burst(["203.0.113.1", "203.0.113.2", "203.0.113.3"])
    assert all(line.startswith(b"+OK") for line in first), first

    async def all_closed() -> bool:
        return server.limiter.open == 0

    await wait_until(all_closed, what="the first burst's sessions ended")
    second = await burst(["203.0.113.9"] * 3)
    assert sorted(line[:3] for line in second) == [b"+OK", b"+OK", b"-ER"], second


async def test_missing_or_malformed_header_closes_without_a_greeting(start_pop3: StartServer) -> None:
    server = await start_pop3(**PROXIED, pop3_proxy_protocol_timeout=2.0)
    for opening in (b"USER alice\r\n", b"PROXY TCP4 not-an-ip 127.0.0.1 1 2\r\n", b"PROXY " + b"x" * 5000, b""):
        assert await dropped_without_a_word(server.ports["pop3"], opening), opening


async def test_plain_pop3_with_poplib_behind_the_balancer(start_pop3: StartServer, account: str, store: Store) -> None:
    server = await start_pop3(**PROXIED, pop3_allow_plaintext_auth=True)
    await deliver(store, message("over 110"))

    def fetch() -> int:
        client = ProxiedPOP3(v2_header("192.0.2.44", 110), server.ports["pop3"])
        try:
            client.user(USER)
            client.pass_(PASSWORD)
            count, _ = client.stat()
            client.quit()
        finally:
            client.close()
        return count

    assert await asyncio.to_thread(fetch) == 1
