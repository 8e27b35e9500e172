"""The minimal path: a message to a local user is queued with confirms; unknown users and broker outages."""

from __future__ import annotations

import asyncio
import smtplib
from collections.abc import Callable
from typing import Any

import aio_pika
from prometheus_client import REGISTRY

from services.smtp_ingress import replies
from shared.envelope import Envelope
from shared.queue_id import is_queue_id
from shared.topology import Topology
from tests.faults.proxy import broker_proxy
from tests.harness import Harness
from tests.helpers import AMQP_URL, http_status, wait_until_sync
from tests.smtp_ingress.conftest import (
    ALICE,
    BOB,
    SIMPLE_MESSAGE,
    RunningIngress,
    read_queue,
    send,
)


def queued_id(reply: bytes) -> str:
    text = reply.decode()
    prefix = str(replies.queued(""))[4:]  # smtplib gives the text after the code
    assert text.startswith(prefix), text
    queue_id = text[len(prefix) :]
    assert is_queue_id(queue_id), text
    return queue_id


def test_message_to_local_user_is_queued_with_envelope_and_received_header(
    ingress: RunningIngress, namespace: str
) -> None:
    with ingress.smtp() as client:
        client.ehlo("client.example.org")
        code, reply = send(client, "sender@remote.example", [ALICE, BOB], SIMPLE_MESSAGE)
    assert code == 250
    queue_id = queued_id(reply)

    [message] = read_queue(namespace)
    envelope = Envelope.from_headers(message.headers)
    assert envelope.queue_id == queue_id == message.message_id
    assert envelope.mail_from == "sender@remote.example"
    assert envelope.recipients == (ALICE, BOB)
    assert envelope.client_address == "127.0.0.1"
    assert message.delivery_mode == 2  # persistent
    assert message.body.startswith(b"Received: from client.example.org ([127.0.0.1])\r\n")
    received = message.body.split(b"\r\nFrom:", 1)[0].decode()
    assert f"by mx.postroom.test (Postroom) with ESMTP id {queue_id};" in received
    assert message.body.endswith(SIMPLE_MESSAGE)
    assert b"\n" not in message.body.replace(b"\r\n", b"")


def test_trace_records_accepted_then_queued(ingress: RunningIngress, namespace: str) -> None:
    with ingress.smtp() as client:
        client.ehlo("client.example.org")
        _, reply = send(client, "sender@remote.example", [ALICE], SIMPLE_MESSAGE)
    queue_id = queued_id(reply)

    def events() -> list[dict[str, Any]]:
        return ingress.run(ingress.app.store.trace.events(queue_id))

    wait_until_sync(lambda: len(events()) == 2, 10, what="two trace events")
    accepted, queued = events()
    assert (accepted["event"], queued["event"]) == ("accepted", "queued")
    assert accepted["client"] == "127.0.0.1" and accepted["helo"] == "client.example.org"
    assert accepted["recipients"] == [ALICE] and accepted["size"] > len(SIMPLE_MESSAGE)


def test_unknown_local_user_is_rejected_550(ingress: RunningIngress, namespace: str) -> None:
    with ingress.smtp() as client:
        client.ehlo("client.example.org")
        client.mail("sender@remote.example")
        code, reply = client.rcpt("nobody@local.test")
    assert f"{code} {reply.decode()}" == str(replies.NO_SUCH_USER)


def _data_reply(port: int) -> tuple[int, bytes]:
    with smtplib.SMTP("127.0.0.1", port, timeout=20) as client:
        client.ehlo("client.example.org")
        return send(client, "sender@remote.example", [ALICE], SIMPLE_MESSAGE)


def test_broker_outage_is_451_and_recovers_without_restart(
    make_ingress: Callable[..., RunningIngress], accounts: None, namespace: str
) -> None:
    with broker_proxy(enabled=False) as proxy:
        ingress = make_ingress(wait_ready=False, amqp_url=proxy.amqp_url)
        assert not ingress.ready()
        code, reply = _data_reply(ingress.port("smtp"))
        assert f"{code} {reply.decode()}" == str(replies.TEMPORARY_FAILURE)

        proxy.enable()
        wait_until_sync(ingress.ready, 20, what="broker reconnected")
        code, reply = _data_reply(ingress.port("smtp"))
        assert code == 250
        assert [m.message_id for m in read_queue(namespace)] == [queued_id(reply)]

        proxy.cut()
        wait_until_sync(lambda: not ingress.ready(), 10, what="connection loss noticed")
        code, reply = _data_reply(ingress.port("smtp"))
        assert f"{code} {reply.decode()}" == str(replies.TEMPORARY_FAILURE)

        proxy.enable()
        wait_until_sync(ingress.ready, 20, what="broker reconnected again")
        code, reply = _data_reply(ingress.port("smtp"))
        assert code == 250
        assert [m.message_id for m in read_queue(namespace)] == [queued_id(reply)]


def test_service_process_starts_without_broker_and_recovers(harness: Harness, accounts: None, namespace: str) -> None:
    """`python -m services.smtp_ingress` starts with the broker away (readyz 503, DATA 451) and heals itself."""
    proxy = broker_proxy(enabled=False)
    try:
        service = harness.spawn("smtp_ingress", POSTROOM_AMQP_URL=proxy.amqp_url)
        wait_until_sync(lambda: http_status(f"{service.metrics_url}/healthz") == 200, 30, what="healthz")
        assert http_status(f"{service.metrics_url}/readyz") == 503
        code, reply = _data_reply(service.port("smtp"))
        assert f"{code} {reply.decode()}" == str(replies.TEMPORARY_FAILURE)

        proxy.enable()
        wait_until_sync(lambda: http_status(f"{service.metrics_url}/readyz") == 200, 30, what="readyz")
        code, reply = _data_reply(service.port("smtp"))
        assert code == 250, service.log()
        assert [m.message_id for m in read_queue(namespace)] == [queued_id(reply)]
        assert service.stop() == 0
    finally:
        proxy.stop()


def test_service_process_happy_path(harness: Harness, accounts: None, namespace: str) -> None:
    service = harness.process("smtp_ingress")
    code, reply = _data_reply(service.port("smtp"))
    assert code == 250
    assert [m.message_id for m in read_queue(namespace)] == [queued_id(reply)]


def test_unroutable_message_is_returned_and_answered_451(ingress: RunningIngress, namespace: str) -> None:
    """Published `mandatory`: with the work queue gone the broker returns the message, and we say 451, not 250."""

    async def delete_incoming() -> None:
        connection = await aio_pika.connect(AMQP_URL, timeout=5)
        async with connection:
            channel = await connection.channel()
            await channel.queue_delete(Topology(namespace).incoming)

    asyncio.run(delete_incoming())
    before = REGISTRY.get_sample_value("postroom_smtp_publish_failures_total", {"reason": "returned"}) or 0
    code, reply = _data_reply(ingress.port("smtp"))
    assert f"{code} {reply.decode()}" == str(replies.TEMPORARY_FAILURE)
    assert REGISTRY.get_sample_value("postroom_smtp_publish_failures_total", {"reason": "returned"}) == before + 1


def test_stalled_broker_is_a_451_after_the_publish_timeout(
    make_ingress: Callable[..., RunningIngress], accounts: None, namespace: str
) -> None:
    with broker_proxy() as proxy:
        ingress = make_ingress(amqp_url=proxy.amqp_url, smtp_publish_timeout=0.5)
        before = REGISTRY.get_sample_value("postroom_smtp_publish_failures_total", {"reason": "timeout"}) or 0
        proxy.stall()
        code, reply = _data_reply(ingress.port("smtp"))
        assert f"{code} {reply.decode()}" == str(replies.TEMPORARY_FAILURE)
        assert REGISTRY.get_sample_value("postroom_smtp_publish_failures_total", {"reason": "timeout"}) == before + 1
        proxy.resume()
