"""Small messages whose frames went out without waiting for the socket to drain: a broker connection lost while
their confirms are pending makes each of them a 451, and nothing answered 250 is lost or queued twice."""

from __future__ import annotations

import asyncio
import smtplib
import threading
from collections.abc import Callable

from prometheus_client import REGISTRY

from services.smtp_ingress import replies
from services.smtp_ingress.publisher import IngressPublisher
from shared.envelope import Envelope
from shared.queue_id import new_queue_id
from tests.faults.proxy import broker_proxy
from tests.helpers import AMQP_URL, wait_until, wait_until_sync
from tests.smtp_ingress.conftest import ALICE, SIMPLE_MESSAGE, RunningIngress, read_queue, send
from tests.smtp_ingress.test_path import queued_id


class Client:
    """One SMTP session in a thread sending `count` messages; keeps every reply to the final dot."""

    def __init__(self, port: int, count: int, before_each: Callable[[], None] = lambda: None) -> None:
        self.port, self.count, self.before_each = port, count, before_each
        self.replies: list[tuple[int, bytes]] = []
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            with smtplib.SMTP("127.0.0.1", self.port, timeout=60) as client:
                client.ehlo("client.example.org")
                for _ in range(self.count):
                    self.before_each()
                    self.replies.append(send(client, "sender@remote.example", [ALICE], SIMPLE_MESSAGE))
        except BaseException as exc:
            self.error = exc

    def join(self) -> list[tuple[int, bytes]]:
        self.thread.join(120)
        assert not self.thread.is_alive() and self.error is None, self.error
        return self.replies


def test_broker_lost_while_small_publishes_await_their_confirms(
    make_ingress: Callable[..., RunningIngress], accounts: None, namespace: str
) -> None:
    with broker_proxy() as proxy:
        ingress = make_ingress(amqp_url=proxy.amqp_url, smtp_publish_timeout=60)
        timeouts = REGISTRY.get_sample_value("postroom_smtp_publish_failures_total", {"reason": "timeout"}) or 0
        proxy.stall()  # the frames leave the ingress but never reach the broker; no confirm comes back
        clients = [Client(ingress.port("smtp"), 1) for _ in range(5)]
        wait_until_sync(lambda: len(ingress.app.handler.inflight) == 5, 20, what="five publishes awaiting confirms")
        proxy.cut()
        for client in clients:
            assert [f"{code} {text.decode()}" for code, text in client.join()] == [str(replies.TEMPORARY_FAILURE)]
        # Answered because the connection went, not because the (long) publish timeout ran out.
        assert REGISTRY.get_sample_value("postroom_smtp_publish_failures_total", {"reason": "timeout"}) == timeouts

        proxy.enable()
        proxy.resume()
        wait_until_sync(ingress.ready, 30, what="broker reconnected")
        [(code, reply)] = Client(ingress.port("smtp"), 1).join()
        assert code == 250
        assert [m.message_id for m in read_queue(namespace, count=10, timeout=3)] == [queued_id(reply)]


def test_broker_cut_amid_a_stream_of_messages_loses_and_duplicates_nothing(
    make_ingress: Callable[..., RunningIngress], accounts: None, namespace: str
) -> None:
    """Six sessions keep sending while the broker connection is cut at whatever moment it happens to be."""
    with broker_proxy() as proxy:
        ingress = make_ingress(amqp_url=proxy.amqp_url, smtp_publish_timeout=60)
        accepted = threading.Semaphore(0)
        clients = [Client(ingress.port("smtp"), 25, accepted.release) for _ in range(6)]
        for _ in range(30):
            assert accepted.acquire(timeout=30)
        proxy.cut()
        wait_until_sync(lambda: not ingress.ready(), 20, what="connection loss noticed")
        proxy.enable()
        wait_until_sync(ingress.ready, 30, what="broker reconnected")
        results = [reply for client in clients for reply in client.join()]
        assert len(results) == 150
        assert {code for code, _ in results} <= {250, 451}
        confirmed = [queued_id(text) for code, text in results if code == 250]
        queued = [m.message_id for m in read_queue(namespace, count=200, timeout=3)]
        assert len(queued) == len(set(queued))  # nothing published twice
        assert set(confirmed) <= set(queued)  # every 250 is in the queue
        assert len(queued) <= len(results)


async def test_concurrent_publishes_joined_in_the_write_queue_each_get_their_own_confirm(namespace: str) -> None:
    """Publishes of one moment share a socket write; each still gets the confirm of its own delivery tag."""
    publisher = IngressPublisher(AMQP_URL, namespace, timeout=30)
    publisher.start()
    try:

        async def ready() -> bool:
            return publisher.ready

        await wait_until(ready, 20, what="publisher ready")
        exchange = publisher._exchange
        assert exchange is not None
        joined = 0
        join = exchange._join_queued

        def counting(payload: bytes) -> bool:
            nonlocal joined
            done = join(payload)
            joined += done
            return done

        exchange._join_queued = counting  # type: ignore[method-assign]
        envelopes = [Envelope(new_queue_id(), "", (ALICE,)) for _ in range(300)]
        await asyncio.gather(*(publisher.publish(e.queue_id.encode() * 40, e) for e in envelopes))
        assert joined > 0  # the test did exercise joining
    finally:
        await publisher.stop()
    queued = await asyncio.to_thread(read_queue, namespace, 400, 5)
    assert sorted(str(m.message_id) for m in queued) == sorted(e.queue_id for e in envelopes)
    assert all(m.body == str(m.message_id).encode() * 40 and m.delivery_mode == 2 for m in queued)
