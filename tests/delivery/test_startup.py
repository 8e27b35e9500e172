"""Start-up with the broker unreachable: alive but not ready, and ready once the broker can be reached."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from pathlib import Path
from typing import Any

from services.store import Store
from tests.delivery.conftest import Broker, mailbox
from tests.helpers import ROOT, free_port, http_status, wait_until


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
    base_env: dict[str, str], broker: Broker, store: Store, local_users: Any, tmp_path: Path
) -> None:
    await local_users("late@example.test")
    proxy_port, metrics_port = free_port(), free_port()
    env = {
        **os.environ,
        **base_env,
        "POSTROOM_AMQP_URL": f"amqp://guest:guest@127.0.0.1:{proxy_port}/",
        "POSTROOM_METRICS_LISTEN": f"127.0.0.1:{metrics_port}",
    }
    log = (tmp_path / "delivery.log").open("ab")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.delivery", env=env, cwd=ROOT, stdout=log, stderr=log
    )
    server = None
    try:
        url = f"http://127.0.0.1:{metrics_port}"

        async def alive_not_ready() -> bool:
            return http_status(f"{url}/healthz") == 200 and http_status(f"{url}/readyz") == 503

        await wait_until(alive_not_ready, what="alive but not ready without a broker")
        assert (tmp_path / "delivery.log").read_text().count("broker unreachable") >= 1

        server = await asyncio.start_server(_forward, "127.0.0.1", proxy_port)

        async def ready() -> bool:
            return http_status(f"{url}/readyz") == 200

        await wait_until(ready, timeout=30, what="ready once the broker is reachable")
        await broker.publish(["late@example.test"])

        async def stored() -> bool:
            return len(await mailbox(store, "late@example.test")) == 1

        await wait_until(stored, what="stored")
    finally:
        if proc.returncode is None:
            proc.terminate()
            await asyncio.wait_for(proc.wait(), 20)
        if server is not None:
            server.close()
    assert proc.returncode == 0
