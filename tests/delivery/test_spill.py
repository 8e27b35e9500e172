"""Large waiting messages: their bodies in memory stay within the budget (the rest spill to unlinked files), every
message is still delivered once and byte for byte, and a worker killed while holding spilled ones loses nothing."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import aio_pika
import pytest
from prometheus_client import REGISTRY

from services.delivery import outcome
from services.delivery.app import DeliveryApp
from services.delivery.config import DeliverySettings
from services.delivery.consumer import Consumer
from services.delivery.outcome import RecipientOutcome
from services.delivery.publisher import DeliveryPublisher
from services.delivery.routing import Target
from services.store import Store
from shared.envelope import Envelope
from shared.errors import ConfigError
from shared.settings import load_settings
from shared.spool import MEMORY_LIMIT, MessageSpool
from tests.delivery.conftest import Broker, mailbox, make_message, metric
from tests.faults.proxy import FaultProxy
from tests.harness import ServiceProcess
from tests.helpers import AMQP_URL, REDIS_URL, wait_until

MIB = 1024 * 1024
SPILLS = "postroom_delivery_spilled_messages_total"


def big_message(i: int, lines: int = 1536) -> bytes:
    """About 1.5 MiB (`lines` of 1000 octets), distinct per `i`, the same length for every `i` below 10000."""
    return make_message(f"big{i:04d}", body=f"{i:04d}{'x' * 994}\r\n" * lines)


def spool_fds(directory: Path) -> int:
    """Open descriptors of this process on files in `directory` (unlinked ones read '<dir>/#123 (deleted)')."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        count += target.startswith(f"{directory}/")
    return count


class SizeGatedRemote:
    """Relays small bodies at once and holds large ones until released; records a digest of every body it gets."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.active = 0
        self.small = 0
        self.bodies: dict[str, list[str]] = {}

    async def __call__(
        self, envelope: Envelope, body: bytes, domain: str, targets: Sequence[Target], signature: bytes = b""
    ) -> list[RecipientOutcome]:
        self.bodies.setdefault(envelope.queue_id, []).append(hashlib.sha256(body).hexdigest())
        if len(body) > MEMORY_LIMIT:
            self.active += 1
            try:
                await self.gate.wait()
            finally:
                self.active -= 1
        else:
            self.small += 1
        return [outcome.delivered(t.address, "250 ok", "smtp", "mx.remote.test") for t in targets]


@contextlib.asynccontextmanager
async def consuming(
    settings: DeliverySettings, store: Store, broker: Broker
) -> AsyncIterator[tuple[Consumer, SizeGatedRemote]]:
    """A consumer (not started yet) relaying through a SizeGatedRemote on a connection of its own; stopped and
    closed on the way out."""
    connection: Any = await aio_pika.connect_robust(AMQP_URL)
    remote = SizeGatedRemote()
    publisher = DeliveryPublisher(connection, broker.topology, settings.retry_schedule)
    await publisher.start()
    consumer = Consumer(settings, store, connection, publisher, remote)
    try:
        yield consumer, remote
    finally:
        await consumer.stop()
        await publisher.close()
        await connection.close()


async def test_waiting_bodies_stay_within_the_budget_and_spill(
    store: Store, broker: Broker, namespace: str, tmp_path: Path
) -> None:
    count, budget = 16, 4 * MIB
    settings = load_settings(
        DeliverySettings,
        namespace=namespace,
        delivery_prefetch=40,
        delivery_concurrency=4,
        delivery_large_concurrency=2,
        delivery_memory_budget=budget,
        delivery_spool_dir=str(tmp_path),
        retry_schedule="1s,2s",
    )
    spills_before = REGISTRY.get_sample_value(SPILLS) or 0.0
    async with consuming(settings, store, broker) as (consumer, remote):
        await consumer.start()
        expected: dict[str, str] = {}
        for i in range(count):
            message = big_message(i)
            envelope = await broker.publish([f"user{i}@remote.test"], message)
            expected[envelope.queue_id] = hashlib.sha256(message).hexdigest()
        size = len(big_message(0))
        # Small mail is not held up by the large messages waiting: they never take a worker slot while they wait.
        small = [await broker.publish([f"small{i}@remote.test"]) for i in range(5)]
        room = consumer.waiting

        async def all_arrived() -> bool:
            return remote.active == 2 and room.spooled + room.held // size == count - 2 and remote.small == 5

        await wait_until(all_arrived, what="two large in work, the others waiting, the small ones relayed")
        assert room.held <= budget and room.peak <= budget
        assert room.spooled >= count - 2 - budget // size
        assert (REGISTRY.get_sample_value(SPILLS) or 0.0) - spills_before == room.spooled
        # Unlinked at creation: nothing in the directory, one open descriptor per spilled body.
        assert os.listdir(tmp_path) == []
        assert spool_fds(tmp_path) == room.spooled

        remote.gate.set()

        async def finished() -> bool:
            return sum(len(v) for v in remote.bodies.values()) == count + 5 and remote.active == 0

        await wait_until(finished, what="every message relayed")
    assert room.peak <= budget
    assert room.held == 0 and room.spooled == 0
    assert spool_fds(tmp_path) == 0 and os.listdir(tmp_path) == []
    for queue_id, digest in expected.items():
        assert remote.bodies[queue_id] == [digest], "each large message relayed once, byte for byte"
    assert all(len(remote.bodies[e.queue_id]) == 1 for e in small)
    assert await broker.depth(broker.topology.incoming) == 0, "every delivery acked"


async def test_an_unreadable_spool_file_requeues_the_message(
    store: Store, broker: Broker, namespace: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = load_settings(
        DeliverySettings,
        namespace=namespace,
        delivery_large_concurrency=1,
        delivery_memory_budget=0,
        delivery_spool_dir=str(tmp_path),
        retry_schedule="1s,2s",
    )
    failures: list[int] = []
    read = MessageSpool.read

    def failing_once(spool: MessageSpool) -> bytes:
        if not failures:
            failures.append(1)
            raise OSError(5, "Input/output error")
        return read(spool)

    monkeypatch.setattr(MessageSpool, "read", failing_once)
    async with consuming(settings, store, broker) as (consumer, remote):
        await consumer.start()
        first = await broker.publish(["first@remote.test"], big_message(1))
        second = await broker.publish(["second@remote.test"], big_message(2))

        async def spilled() -> bool:
            return remote.active == 1 and consumer.waiting.spooled == 1

        await wait_until(spilled, what="the second message spilled behind the first")
        remote.gate.set()

        async def finished() -> bool:
            return set(remote.bodies) == {first.queue_id, second.queue_id} and remote.active == 0

        await wait_until(finished, what="both relayed, the second after its redelivery")
    assert failures == [1]
    assert remote.bodies[second.queue_id] == [hashlib.sha256(big_message(2)).hexdigest()]
    assert consumer.waiting.spooled == 0 and spool_fds(tmp_path) == 0
    assert await broker.depth(broker.topology.incoming) == 0


def test_unwritable_spool_dir_stops_the_start(namespace: str, tmp_path: Path) -> None:
    settings = load_settings(DeliverySettings, namespace=namespace, delivery_spool_dir=str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match="POSTROOM_DELIVERY_SPOOL_DIR"):
        DeliveryApp(settings)


@pytest.fixture
def redis_proxy() -> Any:
    """A proxy in front of the test Redis; `stall()` holds every byte, as a Redis that hangs would."""
    host, _, port = REDIS_URL.split("//", 1)[1].split("/", 1)[0].rpartition(":")
    proxy = FaultProxy(host, int(port)).start()
    proxy.enable()
    yield proxy
    proxy.resume()  # let the stalled pipes end with their connections
    proxy.stop()


async def test_worker_killed_with_spilled_messages_loses_nothing(
    start_service: Callable[..., ServiceProcess],
    broker: Broker,
    store: Store,
    local_users: Callable[..., Any],
    redis_proxy: FaultProxy,
    tmp_path: Path,
) -> None:
    users = [f"big{i}@example.test" for i in range(8)]
    await local_users(*users)
    spool = tmp_path / "spool"
    spool.mkdir()
    env = {
        "POSTROOM_RETRY_SCHEDULE": "1s,2s",
        "POSTROOM_DELIVERY_PREFETCH": "20",
        "POSTROOM_DELIVERY_LARGE_CONCURRENCY": "1",
        "POSTROOM_DELIVERY_MEMORY_BUDGET": str(2 * MIB),
        "POSTROOM_DELIVERY_SPOOL_DIR": str(spool),
    }
    # Redis behind a stalled proxy: the first large message hangs in the store (no timeout before the kill), the
    # next one waits in memory (within 2 MiB), the other six are spilled.
    worker = start_service(
        "delivery",
        POSTROOM_REDIS_URL=f"redis://127.0.0.1:{redis_proxy.port}/0",
        POSTROOM_DELIVERY_REDIS_TIMEOUT="600",
        **env,
    )
    redis_proxy.stall()
    expected: dict[str, tuple[str, bytes]] = {}
    for i, user in enumerate(users):
        message = big_message(i)
        envelope = await broker.publish([user], message)
        expected[user] = (envelope.queue_id, message)

    async def spilled() -> bool:
        return metric(worker, "postroom_delivery_spooled_messages") == 6

    await wait_until(spilled, what="six messages spilled")
    assert metric(worker, "postroom_delivery_waiting_body_bytes") == len(big_message(0))
    assert metric(worker, SPILLS) == 6
    worker.kill()
    assert os.listdir(spool) == []

    start_service("delivery", **env)

    async def all_stored() -> bool:
        return [len(await store.mailboxes.snapshot(user)) >= 1 for user in users] == [True] * len(users)

    await wait_until(all_stored, timeout=60, what="every message stored")

    async def drained() -> bool:
        return await broker.depth(broker.topology.incoming) == 0

    await wait_until(drained, what="incoming drained")
    for user, (queue_id, message) in expected.items():
        stored = await mailbox(store, user)
        assert len(stored) == 1, f"{user}: exactly once"
        assert stored[0].endswith(message), f"{user}: byte for byte"
        assert [m.uid for m in await store.mailboxes.snapshot(user)] == [queue_id]
    assert os.listdir(spool) == []
