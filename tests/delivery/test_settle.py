"""Every recipient settled once, through the delivery service as a real process: remote replies in any bytes
(Latin-1 at MAIL, RCPT, DATA or the final dot; in a delay notice and a lifetime bounce), a broker connection lost
between a relay and its ack, and a dead letter requeued after its dedup key expired. The accepted recipients get
one copy, the sender one bounce that quotes the reply readably, the dead-letter queue stays empty."""

from __future__ import annotations

import email
from collections.abc import Callable, Iterator
from typing import Any

import aio_pika
import pytest

from services.store import Store
from services.store.queue_ops import QueueOps
from tests.delivery.conftest import (
    TEST_SCHEDULE,
    Broker,
    as_stored,
    dsn_fields,
    mailbox,
    make_message,
    report_parts,
)
from tests.delivery.scripted_mx import Script, ScriptedMX
from tests.delivery.smtpsink import Sink
from tests.faults.proxy import broker_proxy
from tests.harness import ServiceProcess
from tests.helpers import AMQP_URL, wait_until

SENDER = "sender@origin.test"
LATIN1 = b"550 5.1.1 M\xfcller unknown"  # raw Latin-1: not UTF-8


@pytest.fixture
def scripted() -> Iterator[Callable[..., ScriptedMX]]:
    started: list[ScriptedMX] = []

    def start(address: str, script: Script) -> ScriptedMX:
        mx = ScriptedMX(address, script).start()
        started.append(mx)
        return mx

    yield start
    for mx in started:
        mx.stop()


async def settled(broker: Broker, store: Store, queue_id: str, last_event: str) -> None:
    """Wait until the original's trace ends in `last_event` and every queue of the namespace is empty."""

    async def done() -> bool:
        events = [e["event"] for e in await store.trace.events(queue_id)]
        return last_event in events

    await wait_until(done, timeout=30, what=f"{last_event} traced")
    queues = [broker.topology.incoming, *(broker.topology.delay_queue(s) for s in (1, 2)), broker.topology.dead]

    async def drained() -> bool:
        return all([await broker.depth(q) == 0 for q in queues])

    await wait_until(drained, what="every queue empty")


def readable_bounce(raw: bytes, action: str = "failed") -> str:
    """The human-readable part of a report, which must quote the Latin-1 reply as text; checks the status part."""
    report, parts = report_parts(raw)
    assert report.get_content_type() == "multipart/report"
    [rcpt] = dsn_fields(raw)[1:]
    assert rcpt["Final-Recipient"] == "rfc822; mueller@latin.test"
    assert rcpt["Action"] == action
    assert "M\\x{FC}ller" in rcpt["Diagnostic-Code"]  # US-ASCII there (RFC 6533's escape)
    payload = parts[0].get_payload(decode=True)
    assert isinstance(payload, bytes)
    return payload.decode("utf-8")


@pytest.mark.parametrize("stage", ["rcpt", "mail", "data", "dot"])
async def test_a_latin1_refusal_bounces_once_and_the_accepted_recipients_get_one_copy(
    stage: str,
    start_service: Callable[..., ServiceProcess],
    broker: Broker,
    store: Store,
    local_users: Any,
    zone: Any,
    dns_server: Any,
    sinks: Any,
    scripted: Callable[..., ScriptedMX],
    loopback_net: str,
) -> None:
    await local_users(SENDER)
    zone.add("good.test", "MX", "10 mx.good.test.")
    zone.add("mx.good.test", "A", f"{loopback_net}.1")
    zone.add("latin.test", "MX", "10 mx.latin.test.")
    zone.add("mx.latin.test", "A", f"{loopback_net}.2")
    good: Sink = sinks(f"{loopback_net}.1")
    script = {
        "rcpt": Script(rcpt={"mueller@latin.test": LATIN1}),
        "mail": Script(mail=LATIN1),
        "data": Script(data_command=LATIN1),
        "dot": Script(final_dot=LATIN1),
    }[stage]
    latin = scripted(f"{loopback_net}.2", script)
    start_service("delivery", POSTROOM_RETRY_SCHEDULE=TEST_SCHEDULE, POSTROOM_DNS_NAMESERVERS=dns_server.nameserver)
    # At RCPT the same transaction also carries a recipient the MX accepts.
    recipients = ["ok@good.test", "mueller@latin.test", *(["ok@latin.test"] if stage == "rcpt" else [])]
    envelope = await broker.publish(recipients, make_message(f"latin1 at {stage}"), sender=SENDER)

    await settled(broker, store, envelope.queue_id, "bounced")
    assert [r.rcpt_tos for r in good.received] == [["ok@good.test"]]
    assert [rcpts for rcpts, _ in latin.received] == ([["ok@latin.test"]] if stage == "rcpt" else [])
    [raw] = await mailbox(store, SENDER)
    assert "<mueller@latin.test>: 550 5.1.1 Müller unknown" in readable_bounce(raw)


async def test_latin1_in_a_delay_notice_and_a_lifetime_bounce(
    start_service: Callable[..., ServiceProcess],
    broker: Broker,
    store: Store,
    local_users: Any,
    zone: Any,
    dns_server: Any,
    sinks: Any,
    scripted: Callable[..., ScriptedMX],
    loopback_net: str,
) -> None:
    """A 4xx in Latin-1 every time: one "still trying" notice, then the bounce once the queue lifetime is over."""
    await local_users(SENDER)
    zone.add("good.test", "A", f"{loopback_net}.1")
    zone.add("latin.test", "A", f"{loopback_net}.2")
    good: Sink = sinks(f"{loopback_net}.1")
    scripted(f"{loopback_net}.2", Script(rcpt={"mueller@latin.test": b"450 4.2.1 M\xfcller unknown"}))
    start_service(
        "delivery",
        POSTROOM_RETRY_SCHEDULE=TEST_SCHEDULE,
        POSTROOM_DNS_NAMESERVERS=dns_server.nameserver,
        POSTROOM_DELAY_WARNING_TIME="1s",
        POSTROOM_MAX_QUEUE_LIFETIME="3s",
    )
    envelope = await broker.publish(["ok@good.test", "mueller@latin.test"], sender=SENDER)

    await settled(broker, store, envelope.queue_id, "bounced")
    assert [r.rcpt_tos for r in good.received] == [["ok@good.test"]]
    reports = await mailbox(store, SENDER)
    subjects = sorted(str(email.message_from_bytes(raw)["Subject"]) for raw in reports)
    assert subjects == ["Delayed Mail (still being retried)", "Undelivered Mail Returned to Sender"]
    for raw in reports:
        delayed = str(email.message_from_bytes(raw)["Subject"]).startswith("Delayed")
        text = readable_bounce(raw, "delayed" if delayed else "failed")
        assert "<mueller@latin.test>: 450 4.2.1 Müller unknown" in text
        if not delayed:
            assert "gave up after" in text


async def test_a_broker_connection_lost_between_relay_and_ack_repeats_nothing(
    start_service: Callable[..., ServiceProcess],
    broker: Broker,
    store: Store,
    local_users: Any,
    zone: Any,
    dns_server: Any,
    sinks: Any,
    loopback_net: str,
) -> None:
    """The broker closes the consumer's channel (here: its connection is cut) while the remote MTA takes the message,
    so the ack cannot go out: the broker redelivers it. The relay still finishes (the work is not cancelled with the
    channel) and is recorded at once, with the local store of the same message: the redelivery skips both. (A local
    recipient on its own is recorded nowhere on its first delivery; its redelivery is harmless through the mailbox
    dedup key: tests/delivery/test_local_path.py::test_crash_after_store_before_ack_stores_exactly_once.)"""
    await local_users("alice@example.test")
    zone.add("remote.test", "A", f"{loopback_net}.1")
    sink: Sink = sinks(f"{loopback_net}.1")
    with broker_proxy() as proxy:
        original = sink.handler.handle_DATA

        async def cut_then_accept(server: Any, session: Any, envelope: Any) -> str:
            if not sink.received:
                proxy.cut()  # the delivery's broker connection, with this delivery unacked on it
                proxy.enable()  # the delivery may reconnect: the broker redelivers the message there
            return await original(server, session, envelope)

        sink.handler.handle_DATA = cut_then_accept  # type: ignore[method-assign]
        worker = start_service(
            "delivery",
            POSTROOM_AMQP_URL=proxy.amqp_url,
            POSTROOM_RETRY_SCHEDULE=TEST_SCHEDULE,
            POSTROOM_DNS_NAMESERVERS=dns_server.nameserver,
        )
        message = make_message("cut")
        envelope = await broker.publish(["alice@example.test", "bob@remote.test"], message)

        async def redelivery_done() -> bool:  # it skipped what was recorded, or (as on main) relayed it again
            skipped = "skipped" in [e["event"] for e in await store.trace.events(envelope.queue_id)]
            redelivered = "redelivered=True" in worker.log() and (skipped or len(sink.received) > 1)
            return redelivered and await broker.depth(broker.topology.incoming) == 0

        await wait_until(redelivery_done, timeout=60, what="the redelivery worked on")
    assert [r.rcpt_tos for r in sink.received] == [["bob@remote.test"]]
    assert await mailbox(store, "alice@example.test") == [as_stored(message)]
    events = await store.trace.events(envelope.queue_id)
    assert [e["recipient"] for e in events if e["event"] == "attempt"] == ["alice@example.test", "bob@remote.test"]
    [skipped] = [e for e in events if e["event"] == "skipped"]
    assert skipped["states"] == {"alice@example.test": "stored", "bob@remote.test": "relayed"}


async def test_a_dead_letter_requeued_after_its_dedup_key_expired_is_stored_once(
    start_service: Callable[..., ServiceProcess], broker: Broker, store: Store, local_users: Any, namespace: str
) -> None:
    """Redelivery is idempotent for ever: a dead letter put back with `postroom queue dead requeue` after 8 days
    (its dedup key gone) stores nothing again, and the usage counters stay exact."""
    await local_users("alice@example.test")
    start_service("delivery", POSTROOM_RETRY_SCHEDULE=TEST_SCHEDULE)
    message = make_message("once")
    envelope = await broker.publish(["alice@example.test"], message)

    async def stored() -> bool:
        return len(await mailbox(store, "alice@example.test")) == 1

    await wait_until(stored, what="stored")
    # The same queue message, as it sits in the dead queue after its ack was lost ten times.
    headers = {**envelope.to_headers(), "x-first-death-reason": "delivery_limit", "x-delivery-count": 10}
    await broker.channel.default_exchange.publish(
        aio_pika.Message(message, headers=headers, message_id=envelope.queue_id), broker.topology.dead
    )
    await store.redis.delete(store.keys.mailbox("alice@example.test").dedup(envelope.queue_id))  # 8 days later
    ops = QueueOps(AMQP_URL, namespace, [1, 2])
    try:
        assert await ops.requeue([envelope.queue_id]) == 1
    finally:
        await ops.close()

    async def seen_again() -> bool:
        events = await store.trace.events(envelope.queue_id)
        attempts = [e["reply"] for e in events if e["event"] == "attempt"]
        empty = await broker.depth(broker.topology.incoming) == 0 and await broker.depth(broker.topology.dead) == 0
        return len(attempts) == 2 and empty

    await wait_until(seen_again, what="the requeued copy delivered")
    events = await store.trace.events(envelope.queue_id)
    assert [e["reply"] for e in events if e["event"] == "attempt"] == ["2.0.0 stored", "2.0.0 duplicate"]
    assert await mailbox(store, "alice@example.test") == [as_stored(message)]
    user = await store.accounts.get_user("alice@example.test")
    assert user is not None and (user.messages, user.bytes) == (1, len(as_stored(message)))
