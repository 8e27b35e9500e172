"""The delivery service as a real process: retries through delay queues, bounces back into a mailbox,
dead letters, poison messages and metrics."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from services.store import Store
from tests.certs import TestCA
from tests.delivery.conftest import (
    TEST_SCHEDULE,
    Broker,
    dsn_fields,
    mailbox,
    make_message,
    metric,
    metric_lines,
    report_parts,
)
from tests.delivery.smtpsink import Behaviour
from tests.harness import ServiceProcess
from tests.helpers import ROOT, wait_until


async def test_deferred_remote_recipient_is_retried_and_local_stored_once(
    start_service: Callable[..., ServiceProcess],
    broker: Broker,
    store: Store,
    local_users: Any,
    zone: Any,
    dns_server: Any,
    sinks: Any,
    loopback_net: str,
) -> None:
    await local_users("alice@example.test")
    zone.add("remote.test", "MX", "10 mx.remote.test.")
    zone.add("mx.remote.test", "A", f"{loopback_net}.1")
    sink = sinks(f"{loopback_net}.1", Behaviour(defer_data=1))
    start_service("delivery", POSTROOM_RETRY_SCHEDULE=TEST_SCHEDULE, POSTROOM_DNS_NAMESERVERS=dns_server.nameserver)
    envelope = await broker.publish(["alice@example.test", "bob@remote.test"])

    async def relayed() -> bool:
        return any(e["event"] == "relayed" for e in await store.trace.events(envelope.queue_id))

    await wait_until(relayed, what="relayed after a retry")
    assert len(sink.received) == 1
    events = await store.trace.events(envelope.queue_id)
    names = [e["event"] for e in events]
    assert names.count("stored") == 1 and names.count("deferred") == 1 and names.count("relayed") == 1
    assert [e["recipient"] for e in events if e["event"] == "attempt"] == [
        "alice@example.test",
        "bob@remote.test",
        "bob@remote.test",
    ]
    assert len(await mailbox(store, "alice@example.test")) == 1


async def test_rejected_remote_recipient_bounces_into_the_senders_mailbox(
    start_service: Callable[..., ServiceProcess],
    broker: Broker,
    store: Store,
    local_users: Any,
    zone: Any,
    dns_server: Any,
    sinks: Any,
    loopback_net: str,
) -> None:
    await local_users("sender@origin.test")
    zone.add("remote.test", "MX", "10 mx.remote.test.")
    zone.add("mx.remote.test", "A", f"{loopback_net}.2")
    sinks(f"{loopback_net}.2", Behaviour(reject={"gone@remote.test"}))
    service = start_service(
        "delivery", POSTROOM_RETRY_SCHEDULE=TEST_SCHEDULE, POSTROOM_DNS_NAMESERVERS=dns_server.nameserver
    )
    envelope = await broker.publish(["gone@remote.test"], make_message("returned"), sender="sender@origin.test")

    async def bounced() -> bool:
        return len(await mailbox(store, "sender@origin.test")) == 1

    await wait_until(bounced, what="bounce in the sender's mailbox")
    [raw] = await mailbox(store, "sender@origin.test")
    report, _ = report_parts(raw)
    assert report.get_content_type() == "multipart/report"
    status = dsn_fields(raw)
    assert status[1]["Status"] == "5.1.1" and status[1]["Remote-MTA"] == "dns; mx.remote.test"
    assert status[1]["Diagnostic-Code"].startswith("smtp; 550 5.1.1")

    async def traced() -> bool:  # the original's "bounced" event is written after the publish is confirmed
        return any(e["event"] == "bounced" for e in await store.trace.events(envelope.queue_id))

    await wait_until(traced, what="bounced event")
    [bounce_event] = [e for e in await store.trace.events(envelope.queue_id) if e["event"] == "bounced"]

    async def report_traced() -> bool:
        return "stored" in [e["event"] for e in await store.trace.events(bounce_event["report"])]

    await wait_until(report_traced, what="the report's stored event")
    assert metric(service, "postroom_delivery_bounces_total") == 1


async def test_full_mailbox_is_retried_then_bounced(
    start_service: Callable[..., ServiceProcess], broker: Broker, store: Store, local_users: Any
) -> None:
    await local_users("sender@origin.test")
    await local_users("small@example.test", quota=50)
    start_service("delivery", POSTROOM_RETRY_SCHEDULE="1s", POSTROOM_MAX_QUEUE_LIFETIME="2s")
    envelope = await broker.publish(["small@example.test"], sender="sender@origin.test")

    async def bounced() -> bool:
        return len(await mailbox(store, "sender@origin.test")) == 1

    await wait_until(bounced, what="bounce after the queue lifetime")
    [raw] = await mailbox(store, "sender@origin.test")
    rcpt = dsn_fields(raw)[1]
    assert rcpt["Status"] == "5.2.2" and rcpt["Final-Recipient"] == "rfc822; small@example.test"

    async def traced() -> bool:  # the trace is posted, not awaited before the ack
        names = [e["event"] for e in await store.trace.events(envelope.queue_id)]
        return names.count("deferred") >= 1 and names[-1:] == ["bounced"]

    await wait_until(traced, what="deferred, then bounced in the trace")
    assert await mailbox(store, "small@example.test") == []


async def test_foreign_message_goes_to_the_dead_queue_and_metrics_show_it(
    start_service: Callable[..., ServiceProcess], broker: Broker
) -> None:
    service = start_service(
        "delivery", POSTROOM_RETRY_SCHEDULE=TEST_SCHEDULE, POSTROOM_DELIVERY_QUEUE_POLL_INTERVAL="0.2s"
    )
    lines = metric_lines(service)
    for series in (
        'postroom_delivery_queue_depth_messages{queue="dead"} 0.0',
        'postroom_delivery_queue_depth_messages{queue="delay.2s"} 0.0',
        'postroom_delivery_attempts_total{outcome="delivered",status_class="2",transport="smtp"} 0.0',
        'postroom_delivery_dns_lookups_total{result="servfail",rtype="MX"} 0.0',
    ):
        assert series in lines
    await broker.publish_raw(b"not ours", {"x-other": "1"}, "foreign")

    async def dead() -> bool:
        return await broker.depth(broker.topology.dead) == 1

    await wait_until(dead, what="dead-lettered")

    async def gauge() -> bool:
        return 'postroom_delivery_queue_depth_messages{queue="dead"} 1.0' in metric_lines(service)

    await wait_until(gauge, what="dead queue gauge")
    assert 'postroom_delivery_dead_letters_total{reason="malformed"} 1.0' in metric_lines(service)


async def test_poison_message_reaches_the_delivery_limit_and_the_dead_queue(
    base_env: dict[str, str], broker: Broker, store: Store, local_users: Any, tmp_path: Path
) -> None:
    """A message that kills the worker every time: after x-delivery-limit deliveries it is dead-lettered."""
    await local_users("victim@example.test")
    envelope = await broker.publish(["victim@example.test"])
    env = {**os.environ, **base_env, "POSTROOM_DELIVERY_FAULT_CRASH_AFTER_STORE": "1", "POSTROOM_METRICS_LISTEN": ""}
    log = (tmp_path / "poison.log").open("ab")
    queues = (broker.topology.incoming, broker.topology.dead)

    async def settled() -> bool:
        # After a crash the broker first returns the message to `incoming` (or dead-letters it): wait for either.
        return sum([await broker.depth(q) for q in queues]) == 1

    for _ in range(15):
        await wait_until(settled, what="message back in a queue")
        if await broker.depth(broker.topology.dead) == 1:
            break
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "services.delivery", env=env, cwd=ROOT, stdout=log, stderr=log
        )
        try:
            await asyncio.wait_for(proc.wait(), 30)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise AssertionError("worker neither crashed nor finished") from None
    [dead] = await broker.get_all(broker.topology.dead)
    assert dead.message_id == envelope.queue_id
    assert len(await mailbox(store, "victim@example.test")) == 1


def test_an_old_setting_name_is_warned_about_at_start(
    start_service: Callable[..., ServiceProcess], broker: Broker, tmp_path: Path
) -> None:
    ca_file = str(TestCA(tmp_path).ca_file)
    service = start_service(
        "delivery", POSTROOM_SMTP_COMMAND_TIMEOUT="42s", POSTROOM_PREFETCH="8", POSTROOM_TLS_CA_FILE=ca_file
    )
    warnings = [line for line in service.log().splitlines() if "renamed setting" in line]
    assert len(warnings) == 3, warnings
    for old, new in (
        ("POSTROOM_SMTP_COMMAND_TIMEOUT", "POSTROOM_RELAY_COMMAND_TIMEOUT"),
        ("POSTROOM_PREFETCH", "POSTROOM_DELIVERY_PREFETCH"),
        ("POSTROOM_TLS_CA_FILE", "POSTROOM_DELIVERY_TLS_CA_FILE"),
    ):
        assert any(old in line and new in line for line in warnings), (old, warnings)
