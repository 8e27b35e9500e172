"""`python -m services.store` as a real process: readiness, the admin API on its port, metrics from Redis."""

from __future__ import annotations

import re
import urllib.request

import aiohttp

from services.store import Store
from shared.queue_id import new_queue_id
from tests.harness import ADMIN_TOKEN, Harness, ServiceProcess
from tests.helpers import free_port, http_status, wait_until, wait_until_sync

MESSAGE = b"Subject: x\r\n\r\nhello\r\n"


def metric(text: str, name: str) -> float | None:
    found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    return None if found is None else float(found.group(1))


def scrape(service: ServiceProcess) -> str:
    with urllib.request.urlopen(f"{service.metrics_url}/metrics", timeout=5) as response:
        return str(response.read().decode())


async def test_store_service_metrics_and_api(store: Store, harness: Harness, store_env: dict[str, str]) -> None:
    service = harness.process("store", POSTROOM_STATS_INTERVAL="0.2s", **store_env)
    http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
    async with http, http.get(f"{service.metrics_url}/readyz") as response:
        assert await response.json() == {"ready": True, "checks": {"redis": True, "admin_api": True}}
    first = scrape(service)
    for name in ("postroom_store_domains", "postroom_store_mailboxes", "postroom_store_messages"):
        assert metric(first, name) == 0
    assert metric(first, "postroom_store_stored_bytes") == 0
    assert metric(first, "postroom_store_trace_events_total") == 0

    admin = f"http://127.0.0.1:{service.port('admin')}"
    auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
        async with http.post(f"{admin}/api/v1/domains", json={"domain": "example.test"}, headers=auth) as response:
            assert response.status == 201
        user = {"address": "m@example.test", "password": "pw"}
        async with http.post(f"{admin}/api/v1/users", json=user, headers=auth) as response:
            assert response.status == 201
        async with http.get(f"{admin}/api/v1/users") as response:
            assert response.status == 401
    await store.mailboxes.deliver("m@example.test", new_queue_id(), MESSAGE)
    await store.trace.record(new_queue_id(), "queued", "smtp")

    async def counted() -> bool:
        text = scrape(service)
        return (
            metric(text, "postroom_store_domains") == 1
            and metric(text, "postroom_store_mailboxes") == 1
            and metric(text, "postroom_store_messages") == 1
            and metric(text, "postroom_store_stored_bytes") == len(MESSAGE)
            and metric(text, "postroom_store_trace_events_total") == 1
        )

    await wait_until(counted, what="store gauges reflecting Redis")
    text = scrape(service)
    assert (metric(text, 'postroom_store_api_requests_total{method="POST",status="201"}') or 0) >= 2
    assert (metric(text, 'postroom_store_api_requests_total{method="GET",status="401"}') or 0) >= 1
    assert service.stop() == 0


def test_not_ready_without_redis(harness: Harness) -> None:
    service = harness.spawn("store", POSTROOM_REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    wait_until_sync(lambda: http_status(f"{service.metrics_url}/readyz") == 503, what="readyz 503")
    assert http_status(f"{service.metrics_url}/healthz") == 200


def test_bad_setting_stops_with_one_line(harness: Harness) -> None:
    done = harness.run("store", POSTROOM_ADMIN_LISTEN="nowhere", POSTROOM_TRACE_RETENTION="-1d")
    assert done.returncode == 2
    assert "POSTROOM_ADMIN_LISTEN" in done.stderr and "POSTROOM_TRACE_RETENTION" in done.stderr
    assert "Traceback" not in done.stderr
