"""Start-up with the broker unreachable: alive but not ready, and ready once the broker can be reached."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from services.store import Store
from tests.delivery.conftest import Broker, mailbox
from tests.harness import Harness
from tests.helpers import free_port, http_status, wait_until


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(Exception):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    writer.close()


async def _forward(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
    """A TCP proxy to the real broker, so the test decides when the broker becomes reachable."""
    broker_reader, broker_writer = await asyncio.open_connection("127.0.0.1", 5672)
    await asyncio.gather(_pipe(client_reader, broker_writer), _pipe(broker_reader, client_writer))


async def test_waits_for_the_broker_and_becomes_ready(
    harness: Harness, broker: Broker, store: Store, local_users: Any
) -> None:
    await local_users("late@example.test")
    proxy_port = free_port()
    service = harness.spawn("delivery", POSTROOM_AMQP_URL=f"amqp://guest:guest@127.0.0.1:{proxy_port}/")
    server = None
    try:
        url = service.metrics_url

        async def alive_not_ready() -> bool:
            return http_status(f"{url}/healthz") == 200 and http_status(f"{url}/readyz") == 503

        await wait_until(alive_not_ready, what="alive but not ready without a broker")
        assert service.log().count("broker unreachable") >= 1

        server = await asyncio.start_server(_forward, "127.0.0.1", proxy_port)

        async def ready() -> bool:
            return http_status(f"{url}/readyz") == 200

        await wait_until(ready, timeout=30, what="ready once the broker is reachable")
        await broker.publish(["late@example.test"])

        async def stored() -> bool:
            return len(await mailbox(store, "late@example.test")) == 1

        await wait_until(stored, what="stored")
        assert await asyncio.to_thread(service.stop) == 0
    finally:
        if server is not None:
            server.close()
