"""A client that disconnects at the final dot cannot leave a half-published message (docs/design.md invariant 1)."""

from __future__ import annotations

import asyncio
import socket
import struct
from typing import Any

import aiormq
import pytest
from aio_pika.exceptions import DeliveryError
from aiosmtpd.smtp import Session

from services.smtp_ingress import replies
from services.smtp_ingress.handler import IngressHandler
from services.smtp_ingress.publisher import IngressPublisher
from services.smtp_ingress.session import IngressEnvelope
from shared.envelope import Envelope
from shared.errors import TemporaryError
from shared.spool import MessageSpool
from tests.helpers import wait_until_sync
from tests.smtp_ingress.conftest import RunningIngress, ingress_settings, read_queue
from tests.smtp_ingress.rawsmtp import RawSMTP
from tests.smtp_ingress.test_hardening import open_transaction


def test_disconnect_at_the_final_dot_leaves_no_partial_message(ingress: RunningIngress, namespace: str) -> None:
    """The client never saw a 250, so either outcome is allowed; a half-published message is not."""
    for _ in range(5):
        raw = RawSMTP(ingress.port("smtp"))
        open_transaction(raw)
        raw.send(b"Subject: gone\r\n\r\nbody\r\n.\r\n")
        # Reset the connection at once (SO_LINGER 0 -> RST) without waiting for the reply.
        raw.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        raw.close()
    registry, handler = ingress.app.server.registry, ingress.app.handler
    wait_until_sync(lambda: not registry.sessions and not handler.inflight, 10, what="sessions and publishes done")
    messages = read_queue(namespace, count=5, timeout=1)
    assert len(messages) <= 5
    assert all(message.body.endswith(b"\r\n\r\nbody\r\n") for message in messages)


class SlowPublisher:
    """Holds every publish until the test releases it, as a slow broker confirm would."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.started = asyncio.Event()
        self.published: list[Envelope] = []

    async def publish(self, body: bytes, envelope: Envelope) -> None:
        self.started.set()
        await self.release.wait()
        self.published.append(envelope)


class FakeTrace:
    def __init__(self) -> None:
        self.events: list[str] = []

    async def record(self, queue_id: str, event: str, service: str, **fields: Any) -> None:
        self.events.append(event)

    async def record_many(self, queue_id: str, service: str, events: list[tuple[str, dict[str, Any]]]) -> None:
        self.events.extend(event for event, _ in events)

    def post(self, queue_id: str, service: str, events: list[tuple[str, dict[str, Any]]]) -> None:
        self.events.extend(event for event, _ in events)


class FakeStore:
    def __init__(self) -> None:
        self.trace = FakeTrace()


class FakeServer:
    client_ip = "192.0.2.1"
    listener = "smtp"

    def tls_facts(self) -> None:
        return None


async def test_cancelled_data_hook_lets_the_publish_finish(namespace: str) -> None:
    publisher = SlowPublisher()
    store = FakeStore()
    handler = IngressHandler(ingress_settings(namespace), store, publisher, None)  # type: ignore[arg-type]
    session = Session(asyncio.get_running_loop())
    session.host_name = "client.example.org"
    envelope = IngressEnvelope()
    envelope.mail_from = "sender@remote.example"
    envelope.rcpt_tos = ["alice@local.test"]
    envelope.spool = MessageSpool.of(b"Subject: x\r\n\r\nbody\r\n")

    hook = asyncio.create_task(handler.handle_DATA(FakeServer(), session, envelope))
    await asyncio.wait_for(publisher.started.wait(), 5)
    hook.cancel()  # what aiosmtpd does when the client's connection is lost
    await asyncio.gather(hook, return_exceptions=True)
    assert hook.cancelled() and handler.inflight  # the publish is still running

    publisher.release.set()
    await asyncio.wait(list(handler.inflight), timeout=5)
    assert [e.recipients for e in publisher.published] == [("alice@local.test",)]
    assert store.trace.events == ["accepted", "queued"]


async def test_data_hook_answers_451_when_the_publish_fails(namespace: str) -> None:
    class FailingPublisher:
        async def publish(self, body: bytes, envelope: Envelope) -> None:
            raise TemporaryError("publish failed", reason="nack: test")

    handler = IngressHandler(ingress_settings(namespace), FakeStore(), FailingPublisher(), None)  # type: ignore[arg-type]
    session = Session(asyncio.get_running_loop())
    envelope = IngressEnvelope()
    envelope.mail_from = "<>"
    envelope.rcpt_tos = ["alice@local.test"]
    envelope.spool = MessageSpool.of(b"Subject: x\r\n\r\nbody\r\n")
    assert await handler.handle_DATA(FakeServer(), session, envelope) == replies.TEMPORARY_FAILURE


async def test_nack_is_a_temporary_error() -> None:
    """A broker nack (e.g. a full quorum queue with reject-publish) must never become a 250."""

    class NackingExchange:
        async def publish(self, *args: Any, **kwargs: Any) -> None:
            raise DeliveryError(None, aiormq.spec.Basic.Nack())

    class Open:
        is_closed = False
        transport = None  # no aiormq connection behind it: never blocked

    publisher = IngressPublisher("amqp://unused/", "ns", timeout=1)
    publisher._exchange, publisher._connection, publisher._channel = NackingExchange(), Open(), Open()  # type: ignore[assignment]
    with pytest.raises(TemporaryError) as error:
        await publisher.publish(b"x", Envelope("01ABCDEFGHJKMNPQRSTVWXYZ00", "", ("a@b.example",)))
    assert error.value.reason.startswith("nack")
