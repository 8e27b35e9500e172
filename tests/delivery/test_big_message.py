"""A big message (many AMQP body frames) is stored byte-exact, once across a crash, holding its body only once."""

from __future__ import annotations

import gc
import tracemalloc
from collections.abc import Callable
from typing import Any

import aio_pika
import uvloop

from services.delivery.config import DeliverySettings
from services.delivery.consumer import Consumer
from services.store import Store
from shared.envelope import Envelope
from shared.queue_id import new_queue_id
from shared.settings import load_settings
from tests.delivery.conftest import TEST_SCHEDULE, Broker, as_stored, crash_after_store_then_redeliver, mailbox
from tests.harness import ServiceProcess
from tests.helpers import AMQP_URL, REDIS_URL, wait_until

MiB = 1 << 20


def big_message(size: int) -> bytes:
    """CRLF lines that each carry their number, so a lost, doubled or reordered frame changes the bytes."""
    lines = [b"%08d " % i + b"y" * 89 + b"\r\n" for i in range(size // 100)]
    return b"Subject: big\r\n\r\n" + b"".join(lines)


async def test_big_message_is_stored_byte_exact_once_across_a_crash_before_the_ack(
    start_service: Callable[..., ServiceProcess], broker: Broker, store: Store, local_users: Any
) -> None:
    await local_users("big@example.test")
    message = big_message(3 * MiB + 12345)  # RabbitMQ's 128 KiB frames: 25 of them, the last one partial
    after_kill = await crash_after_store_then_redeliver(start_service, broker, store, "big@example.test", message)
    assert after_kill == [as_stored(message)]
    assert await mailbox(store, "big@example.test") == [as_stored(message)]


def test_delivery_holds_a_big_body_once(namespace: str) -> None:
    """Queue → Redis keeps one copy of the body: aiormq's BytesIO hands its buffer over on getvalue(), to_crlf
    returns a CRLF-only body as it is, and redis-py writes a big argument as its own buffer. On uvloop, as the
    service runs: asyncio's own writelines (Python 3.11) joins the buffers, a copy uvloop does not make."""
    size = 8 * MiB
    peak, stored = uvloop.run(_deliver_traced(namespace, big_message(size)))
    assert stored
    # One copy is 1.0x; BytesIO's growth over-allocates by an eighth. A second copy anywhere would be >= 2.0x.
    assert peak < 1.5 * size, f"traced peak {peak / MiB:.1f} MiB for a {size / MiB:.0f} MiB body"


async def _deliver_traced(namespace: str, message: bytes) -> tuple[int, bool]:
    """Publish `message`, then trace allocations from the consumer's start until the message is stored."""
    store = Store.connect(REDIS_URL, namespace)
    connection = await aio_pika.connect_robust(AMQP_URL)
    try:
        await store.accounts.add_domain("example.test")
        await store.accounts.add_user("big@example.test", "pw")
        broker = Broker(connection, namespace)
        await broker.start()
        envelope = Envelope(new_queue_id(), "sender@remote.test", ("big@example.test",))
        await broker.publish_envelope(envelope, message)
        expected, size = message, len(message)
        del message
        gc.collect()
        settings = load_settings(DeliverySettings, namespace=namespace, retry_schedule=TEST_SCHEDULE)
        consumer = Consumer(settings, store, connection, None, None)  # type: ignore[arg-type]
        tracemalloc.start()
        try:
            await consumer.start()

            async def stored() -> bool:
                return bool(await store.mailboxes.snapshot("big@example.test"))

            await wait_until(stored, what="the big message in the mailbox")
            await consumer.stop()
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        kept = await mailbox(store, "big@example.test")
        return peak, kept == [as_stored(expected)] and len(expected) == size
    finally:
        await connection.close()
        await store.close()
