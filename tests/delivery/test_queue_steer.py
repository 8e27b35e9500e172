"""The operator's queue with real deferred mail: an MX answers 451, `postroom queue` lists, flushes, holds, releases
and deletes, the delivery process is SIGKILLed in the middle, and what the MX receives is counted."""

from __future__ import annotations

import json
import os
import subprocess
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from services.store import Store
from shared.queue_id import new_queue_id
from tests.delivery.conftest import Broker, mailbox, make_message
from tests.delivery.scripted_mx import Script, ScriptedMX
from tests.helpers import AMQP_URL, REDIS_URL, ROOT, ServiceProcess, free_port, wait_until
from tests.store.test_cli_exit import entry_point

REFUSAL = b"451 4.3.0 not now, try later"
SENDER = "sender@example.test"


@pytest.fixture
def mx(loopback_net: str) -> Iterator[ScriptedMX]:
    server = ScriptedMX(f"{loopback_net}.1", Script(final_dot=REFUSAL)).start()
    yield server
    server.stop()


def delivery_env(loopback_net: str, schedule: str) -> dict[str, str]:
    return {
        "POSTROOM_RETRY_SCHEDULE": schedule,
        "POSTROOM_TRANSPORT_MAP": f"remote.test=[{loopback_net}.1],other.test=[{loopback_net}.1]",
    }


@pytest.fixture
def postroom(namespace: str) -> Callable[..., subprocess.CompletedProcess[str]]:
    """The installed `postroom` CLI as an operator runs it (the retry schedule given per call, as the services')."""

    def run(*args: str, schedule: str = "1h", **overrides: str) -> subprocess.CompletedProcess[str]:
        env = {
            **os.environ,
            "POSTROOM_NAMESPACE": namespace,
            "POSTROOM_REDIS_URL": REDIS_URL,
            "POSTROOM_AMQP_URL": AMQP_URL,
            "POSTROOM_RETRY_SCHEDULE": schedule,
            **overrides,
        }
        return subprocess.run([*entry_point(), *args], env=env, capture_output=True, text=True, cwd=ROOT, timeout=60)

    return run


def listed(postroom: Callable[..., Any], *args: str, schedule: str = "1h") -> dict[str, dict[str, Any]]:
    done = postroom("queue", "list", "--json", *args, schedule=schedule)
    assert done.returncode == 0, done.stderr
    return {e["queue_id"]: e for e in json.loads(done.stdout)}


async def state_is(postroom: Callable[..., Any], queue_id: str, state: str | None, schedule: str = "1h") -> None:
    async def check() -> bool:
        entry = listed(postroom, schedule=schedule).get(queue_id)
        return (entry["state"] if entry else None) == state

    await wait_until(check, timeout=30, what=f"{queue_id} listed as {state}")


async def events(store: Store, queue_id: str) -> list[str]:
    return [e["event"] for e in await store.trace.events(queue_id)]


async def traced(store: Store, queue_id: str, event: str, count: int = 1) -> None:
    async def check() -> bool:
        return (await events(store, queue_id)).count(event) >= count

    await wait_until(check, timeout=30, what=f"{count} x {event} traced")


async def drained(broker: Broker, delays: list[int]) -> None:
    names = [broker.topology.incoming, *(broker.topology.delay_queue(s) for s in delays)]

    async def check() -> bool:
        return all([await broker.depth(n) == 0 for n in names])

    await wait_until(check, timeout=30, what="queues drained")


def ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, (done.returncode, done.stdout, done.stderr)
    return done.stdout


async def test_list_then_flush_delivers_once(
    mx: ScriptedMX,
    broker: Broker,
    store: Store,
    start_service: Callable[..., ServiceProcess],
    loopback_net: str,
    postroom: Callable[..., Any],
) -> None:
    start_service("delivery", **delivery_env(loopback_net, "1h"))
    envelope = await broker.publish(["a@remote.test"], make_message("flushme"))
    await state_is(postroom, envelope.queue_id, "deferred")
    entry = listed(postroom, "--deferred")[envelope.queue_id]
    assert entry["attempts"] == 1 and entry["recipients"] == ["a@remote.test"] and "451" in entry["last_error"]
    assert entry["sender"] == "sender@remote.test" and entry["next_attempt"] > entry["arrival"] + 3000
    table = ok(postroom("queue", "list"))
    assert envelope.queue_id in table and "not now, try later" in table and "a@remote.test" in table
    assert mx.received == []

    mx.handler.script.final_dot = None  # the MX accepts from now on
    assert envelope.queue_id in ok(postroom("queue", "flush", envelope.queue_id))
    await state_is(postroom, envelope.queue_id, None)
    await drained(broker, [3600])
    assert len(mx.received) == 1
    trace = await events(store, envelope.queue_id)
    assert trace.index("flushed") < trace.index("relayed")
    assert ok(postroom("queue", "list")).strip() == "Mail queue is empty"


async def test_a_leftover_copy_after_a_flush_repeats_nothing(
    mx: ScriptedMX,
    broker: Broker,
    store: Store,
    start_service: Callable[..., ServiceProcess],
    loopback_net: str,
    postroom: Callable[..., Any],
) -> None:
    """A flush killed between the broker's confirm of its copy and the ack of the original leaves two copies: the
    one delivered second finds the recipient settled. Made here by putting the deferred copy into `incoming` twice."""
    delivery = start_service("delivery", **delivery_env(loopback_net, "1h"))
    envelope = await broker.publish(["b@remote.test"], make_message("twice"))
    await state_is(postroom, envelope.queue_id, "deferred")
    delivery.kill()
    [copy] = await broker.get_all(broker.topology.delay_queue(3600))
    mx.handler.script.final_dot = None
    for _ in range(2):
        await broker.publish_raw(copy.body, dict(copy.headers), copy.message_id)
    start_service("delivery", **delivery_env(loopback_net, "1h"))
    await traced(store, envelope.queue_id, "skipped")
    await drained(broker, [3600])
    assert len(mx.received) == 1
    assert listed(postroom) == {}


async def test_hold_survives_a_kill_and_release_delivers_once(
    mx: ScriptedMX,
    broker: Broker,
    store: Store,
    start_service: Callable[..., ServiceProcess],
    loopback_net: str,
    postroom: Callable[..., Any],
) -> None:
    """Held with a 2 s schedule: its copy comes due again and again and is parked each time, never attempted, also
    across a SIGKILL of the delivery; released, it is delivered once."""
    env = delivery_env(loopback_net, "2s")
    delivery = start_service("delivery", **env)
    envelope = await broker.publish(["c@remote.test"], make_message("holdme"))
    await state_is(postroom, envelope.queue_id, "deferred", "2s")
    assert envelope.queue_id in ok(postroom("queue", "hold", envelope.queue_id, schedule="2s"))
    mx.handler.script.final_dot = None
    await traced(store, envelope.queue_id, "parked", 2)
    delivery.kill()
    parked = (await events(store, envelope.queue_id)).count("parked")
    start_service("delivery", **env)
    await traced(store, envelope.queue_id, "parked", parked + 2)
    assert mx.received == []
    assert set(listed(postroom, "--held", schedule="2s")) == {envelope.queue_id}
    assert listed(postroom, "--deferred", schedule="2s") == {}

    ok(postroom("queue", "release", envelope.queue_id, schedule="2s"))
    await state_is(postroom, envelope.queue_id, None, "2s")
    await drained(broker, [2])
    assert len(mx.received) == 1
    trace = await events(store, envelope.queue_id)
    assert trace.index("held") < trace.index("released") < trace.index("relayed")


async def test_hold_during_an_attempt_then_kill(
    mx: ScriptedMX,
    broker: Broker,
    store: Store,
    start_service: Callable[..., ServiceProcess],
    loopback_net: str,
    postroom: Callable[..., Any],
) -> None:
    """Held while a retry is under way (the MX tarpits the final dot: `active`), the delivery SIGKILLed there: the
    redelivered copy is parked, not attempted; released, it is delivered once."""
    env = delivery_env(loopback_net, "1h")
    delivery = start_service("delivery", **env)
    envelope = await broker.publish(["d@remote.test"], make_message("stuck"))
    await state_is(postroom, envelope.queue_id, "deferred")
    mx.handler.script.final_dot = None
    mx.handler.script.tarpit = True
    ok(postroom("queue", "flush", envelope.queue_id))
    await state_is(postroom, envelope.queue_id, "active")

    async def tarpitted() -> bool:
        return mx.handler.tarpitted >= 1

    await wait_until(tarpitted, timeout=30, what="the retry under way")
    ok(postroom("queue", "hold", envelope.queue_id))
    delivery.kill()
    mx.handler.script.tarpit = False
    start_service("delivery", **env)
    await traced(store, envelope.queue_id, "parked")
    assert set(listed(postroom, "--held")) == {envelope.queue_id}
    assert mx.received == []
    ok(postroom("queue", "release", envelope.queue_id))
    await state_is(postroom, envelope.queue_id, None)
    await drained(broker, [3600])
    assert len(mx.received) == 1


async def test_delete_with_and_without_a_bounce(
    mx: ScriptedMX,
    broker: Broker,
    store: Store,
    start_service: Callable[..., ServiceProcess],
    loopback_net: str,
    postroom: Callable[..., Any],
    local_users: Callable[..., Any],
) -> None:
    await local_users(SENDER)
    env = delivery_env(loopback_net, "1h")
    start_service("delivery", **env)
    bounced = await broker.publish(["e@remote.test"], make_message("bounce", sender=SENDER), sender=SENDER)
    dropped = await broker.publish(["f@remote.test"], make_message("drop", sender=SENDER), sender=SENDER)
    for envelope in (bounced, dropped):
        await state_is(postroom, envelope.queue_id, "deferred")
    mx.handler.script.final_dot = None  # an attempt now would deliver: none may happen

    ok(postroom("queue", "delete", dropped.queue_id))
    assert dropped.queue_id not in listed(postroom)
    ok(postroom("queue", "delete", bounced.queue_id, "--bounce"))

    async def reported() -> bool:
        return len(await mailbox(store, SENDER)) == 1

    await wait_until(reported, timeout=30, what="the report in the sender's mailbox")
    [report] = await mailbox(store, SENDER)
    assert b"deleted from the queue by the postmaster" in report and b"e@remote.test" in report
    await state_is(postroom, bounced.queue_id, None)
    # The deleted message's copy comes due (moved to `incoming` here, as its delay queue would) and finds its
    # recipient deleted.
    [copy] = await broker.get_all(broker.topology.delay_queue(3600))
    assert copy.message_id == dropped.queue_id
    await broker.publish_raw(copy.body, dict(copy.headers), copy.message_id)
    await traced(store, dropped.queue_id, "skipped")
    await drained(broker, [3600])
    assert mx.received == []
    assert "deleted" in await events(store, dropped.queue_id)


async def test_flush_while_the_delivery_is_down(
    mx: ScriptedMX,
    broker: Broker,
    store: Store,
    start_service: Callable[..., ServiceProcess],
    loopback_net: str,
    postroom: Callable[..., Any],
) -> None:
    env = delivery_env(loopback_net, "1h")
    delivery = start_service("delivery", **env)
    to_flush = await broker.publish(["g@remote.test"], make_message("g"))
    other = await broker.publish(["h@other.test"], make_message("h"))
    await state_is(postroom, to_flush.queue_id, "deferred")
    await state_is(postroom, other.queue_id, "deferred")
    delivery.kill()
    mx.handler.script.final_dot = None
    report = json.loads(ok(postroom("queue", "flush", "--domain", "remote.test", "--json")))
    assert report["flushed"] == [to_flush.queue_id]
    # The other message went back to its delay queue, keeping its due time.
    assert await broker.depth(broker.topology.delay_queue(3600)) == 1
    start_service("delivery", **env)
    await state_is(postroom, to_flush.queue_id, None)
    assert len(mx.received) == 1
    assert set(listed(postroom)) == {other.queue_id}


async def test_exit_statuses(postroom: Callable[..., Any], store: Store) -> None:
    def one_line(done: subprocess.CompletedProcess[str], status: int) -> str:
        assert done.returncode == status, (done.returncode, done.stdout, done.stderr)
        assert len(done.stderr.splitlines()) == 1 and "Traceback" not in done.stderr
        return done.stderr

    assert "unknown queue id" in one_line(postroom("queue", "hold", "01JD3ZZZZZZZZZZZZZZZZZZZZZ"), 1)
    assert "unknown queue id" in one_line(postroom("queue", "delete", "nonsense"), 1)
    one_line(postroom("queue", "flush"), 2)
    one_line(postroom("queue", "flush", "--all", "--domain", "x.test"), 2)
    one_line(postroom("queue", "list", "--bogus"), 2)
    one_line(postroom("queue", "release"), 2)
    queue_id = new_queue_id()
    fields: dict[str, str | int | float] = {"sender": "", "recipients": '["r@x.test"]', "arrival": 1.0, "attempts": 1}
    await store.queue.record(queue_id, {}, False, "defer", fields)
    assert "not held" in one_line(postroom("queue", "release", queue_id), 1)
    nowhere = f"127.0.0.1:{free_port()}"
    assert "RabbitMQ" in one_line(postroom("queue", "flush", queue_id, POSTROOM_AMQP_URL=f"amqp://{nowhere}/"), 75)
    assert "Redis" in one_line(postroom("queue", "list", POSTROOM_REDIS_URL=f"redis://{nowhere}/0"), 75)
    assert listed(postroom)[queue_id]["state"] == "deferred"  # nothing changed by the failures


async def test_the_same_over_the_admin_api(
    mx: ScriptedMX,
    broker: Broker,
    store: Store,
    start_service: Callable[..., ServiceProcess],
    loopback_net: str,
    base_env: dict[str, str],
) -> None:
    import aiohttp

    env = delivery_env(loopback_net, "1h")
    start_service("delivery", **env)
    store_service = start_service("store", **env, POSTROOM_STATS_INTERVAL="1s")
    base = f"http://{base_env['POSTROOM_ADMIN_LISTEN']}/api/v1"
    headers = {"Authorization": f"Bearer {base_env['POSTROOM_ADMIN_TOKEN']}"}
    async with aiohttp.ClientSession(headers=headers) as http:

        async def call(method: str, path: str, **params: str) -> tuple[int, Any]:
            async with http.request(method, base + path, params=params) as response:
                return response.status, await response.json()

        envelope = await broker.publish(["i@remote.test"], make_message("api"))
        path = f"/queue/messages/{envelope.queue_id}"

        async def state(wanted: str | None) -> None:
            async def check() -> bool:
                found = (await call("GET", "/queue/messages"))[1]["messages"]
                return [m["state"] for m in found if m["queue_id"] == envelope.queue_id] == ([wanted] if wanted else [])

            await wait_until(check, timeout=30, what=f"listed as {wanted}")

        await state("deferred")
        _, body = await call("GET", "/queue/messages", state="deferred", domain="remote.test")
        [entry] = body["messages"]
        assert entry["recipients"] == ["i@remote.test"] and "451" in entry["last_error"]
        assert (await call("GET", "/queue/messages", sender="nobody@x.test"))[1] == {"messages": []}
        assert (await call("POST", f"{path}/hold"))[1]["held"] == [envelope.queue_id]
        await state("held")

        def gauge() -> dict[str, float]:
            with urllib.request.urlopen(f"{store_service.metrics_url}/metrics", timeout=5) as response:
                lines = response.read().decode().splitlines()
            return {
                line.split('"')[1]: float(line.rpartition(" ")[2])
                for line in lines
                if line.startswith("postroom_queue_messages{")
            }

        async def one_held() -> bool:
            return gauge().get("held") == 1 and gauge().get("deferred") == 0

        await wait_until(one_held, timeout=30, what="postroom_queue_messages{state=held} 1")
        assert (await call("POST", f"{path}/flush"))[1]["not_waiting"] == [envelope.queue_id]  # held: not flushed
        mx.handler.script.final_dot = None
        assert (await call("POST", f"{path}/release"))[1]["flushed"] == [envelope.queue_id]
        await state(None)
        assert len(mx.received) == 1
        assert (await call("POST", f"{path}/delete"))[0] == 404  # finished: no longer queued
        assert (await call("POST", "/queue/messages/nonsense/hold"))[0] == 400
        assert (await call("POST", f"{path}/hold", bounce="true"))[0] == 400
        assert (await call("GET", "/queue/messages", state="bogus"))[0] == 400
    trace = await events(store, envelope.queue_id)
    assert {"held", "released", "flushed", "relayed"} <= set(trace)
