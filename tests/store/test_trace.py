"""Message traces: recorded by any service, bounded and expiring, shown in order by the CLI and the API."""

from __future__ import annotations

import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import requests
from click.testing import CliRunner

from services.store import Store
from services.store.cli import cli
from services.store.trace import MAX_EVENTS, Trace
from shared.queue_id import new_queue_id
from tests.redis_private import PrivateRedis, private_redis  # noqa: F401  (fixture)
from tests.store.conftest import AdminAPI


async def record_life(store: Store, queue_id: str) -> None:
    await store.trace.record(queue_id, "accepted", "smtp", client="127.0.0.1", tls=True, auth="", size=321)
    await store.trace.record(queue_id, "queued", "smtp")
    await store.trace.record(
        queue_id,
        "attempt",
        "delivery",
        recipient="r@remote.test",
        transport="smtp",
        host="mx.remote.test",
        reply="451 4.7.1 try later",
    )
    await store.trace.record(queue_id, "deferred", "delivery", recipient="r@remote.test", delay=60)
    await store.trace.record(queue_id, "relayed", "delivery", recipient="r@remote.test", reply="250 ok")


async def test_events_in_order_bounded_and_expiring(store: Store) -> None:
    queue_id = new_queue_id()
    await record_life(store, queue_id)
    events = await store.trace.events(queue_id)
    assert [e["event"] for e in events] == ["accepted", "queued", "attempt", "deferred", "relayed"]
    assert events[2]["reply"] == "451 4.7.1 try later" and events[0]["size"] == 321
    assert 0 < await store.redis.ttl(store.trace.key(queue_id)) <= 7 * 86400
    short = Trace(store.redis, store.namespace, retention=60)
    for n in range(MAX_EVENTS + 20):
        await short.record(queue_id, "attempt", "delivery", n=n)
    assert len(await store.trace.events(queue_id)) == MAX_EVENTS  # a looping message cannot grow it forever
    assert await store.redis.ttl(store.trace.key(queue_id)) <= 60
    assert int(await store.redis.get(store.keys.trace_events)) == 5 + MAX_EVENTS + 20


async def test_cli_trace(store: Store, store_env: dict[str, str]) -> None:
    queue_id = new_queue_id()
    await record_life(store, queue_id)
    runner = CliRunner()
    env = {"POSTROOM_NAMESPACE": store.namespace, **store_env}

    def postroom(*args: str):  # type: ignore[no-untyped-def]
        with ThreadPoolExecutor(1) as pool:
            return pool.submit(runner.invoke, cli, list(args), env=env).result()

    table = postroom("trace", queue_id.lower())
    assert table.exit_code == 0, table.output
    lines = table.stdout.splitlines()
    assert lines[0] == f"queue id {queue_id}"
    assert [line.split()[4] for line in lines[1:]] == ["accepted", "queued", "attempt", "deferred", "relayed"]
    assert "reply=451 4.7.1 try later" in lines[3]
    document = json.loads(postroom("trace", queue_id, "--json").stdout)
    assert document["queue_id"] == queue_id and len(document["events"]) == 5
    missing = postroom("trace", new_queue_id())
    assert missing.exit_code == 1 and "no trace" in missing.stderr
    assert postroom("trace", "not-an-id").exit_code == 1


async def test_api_trace(store: Store, store_env: dict[str, str], admin_factory: Callable[..., AdminAPI]) -> None:
    admin = admin_factory(
        redis_url=store_env["POSTROOM_REDIS_URL"], cluster=store_env["POSTROOM_REDIS_CLUSTER"] == "true"
    )
    queue_id = new_queue_id()
    await record_life(store, queue_id)

    def get(path: str) -> requests.Response:
        with ThreadPoolExecutor(1) as pool:
            return pool.submit(requests.get, admin.url + path, headers=admin.headers(), timeout=10).result()

    body = get(f"/api/v1/trace/{queue_id}").json()
    assert body["queue_id"] == queue_id
    assert [e["event"] for e in body["events"]] == ["accepted", "queued", "attempt", "deferred", "relayed"]
    assert get(f"/api/v1/trace/{new_queue_id()}").status_code == 404


def test_retention_setting_applies_to_every_service(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import pytest

    from services.store import retention_from_environment
    from shared.errors import ConfigError

    monkeypatch.delenv("POSTROOM_TRACE_RETENTION", raising=False)
    assert retention_from_environment() == 7 * 86400
    monkeypatch.setenv("POSTROOM_TRACE_RETENTION", "36h")
    assert retention_from_environment() == 36 * 3600
    monkeypatch.setenv("POSTROOM_TRACE_RETENTION", "soon")
    with pytest.raises(ConfigError, match="POSTROOM_TRACE_RETENTION"):
        retention_from_environment()


async def test_one_large_write_keeps_the_oldest_events(store: Store) -> None:
    """More events of one message in one write than one script call takes: still bounded, the oldest kept."""
    queue_id = new_queue_id()
    await store.trace.record_many(queue_id, "delivery", [("attempt", {"n": n}) for n in range(2500)])
    events = await store.trace.events(queue_id)
    assert [e["n"] for e in events] == list(range(MAX_EVENTS))
    assert await store.redis.ttl(store.trace.key(queue_id)) > 0


async def test_a_redis_without_the_trace_script_gets_it(private_redis: PrivateRedis) -> None:  # noqa: F811
    """The coalesced EVALSHA of a Redis that lost its scripts (restart, SCRIPT FLUSH) answers NOSCRIPT: the events are
    written all the same, once."""
    store = Store.connect(private_redis.url, "t", coalesce=True)
    try:
        queue_id = new_queue_id()
        await store.trace.record(queue_id, "accepted", "smtp")
        private_redis.command("SCRIPT", "FLUSH")
        await store.trace.record(queue_id, "queued", "smtp")
        await store.trace.record(queue_id, "attempt", "delivery")
        assert [e["event"] for e in await store.trace.events(queue_id)] == ["accepted", "queued", "attempt"]
    finally:
        await store.close()
