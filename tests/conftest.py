"""Shared fixtures: a unique namespace per test (its own Redis keys and queue names), the store, cheap password
hashing, and the harness that starts services (tests/harness.py)."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import aio_pika
import pytest

from services.store import Store, passwords
from services.store.passwords import Argon2Settings
from shared.topology import Topology
from tests.harness import Harness, ServiceProcess
from tests.helpers import AMQP_URL, REDIS_URL
from tests.rabbitmq_node import rabbitmq_node  # noqa: F401  (session fixture: a private RabbitMQ node)
from tests.redis_cluster import redis_cluster  # noqa: F401  (session fixture: a private 3-master Redis Cluster)
from tests.redis_private import private_redis  # noqa: F401  (a redis-server of one test, to restart or stop)

DEFAULT_TEST_DELAYS = [1, 2, 5, 60, 300, 900, 1800, 3600, 7200, 14400]


# Fixtures that start a broker of their own, once per session or module, each kept to one worker.
SHARED_FIXTURES = ("rabbitmq_node", "rabbitmq_cluster")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under pytest-xdist's `--dist loadgroup`, the tests of one expensive shared fixture run on one worker, so it
    starts once rather than once per worker: private RabbitMQ nodes (Erlang VMs, SHARED_FIXTURES) and the fault
    stack (every service as a process, package-scoped). Other tests go to whichever worker is free."""
    for item in items:
        shared = [name for name in SHARED_FIXTURES if name in getattr(item, "fixturenames", ())]
        if shared:
            item.add_marker(pytest.mark.xdist_group(shared[0]))
        elif item.nodeid.startswith("tests/faults/"):
            item.add_marker(pytest.mark.xdist_group("fault_stack"))


@pytest.fixture
def namespace() -> Iterator[str]:
    """A namespace of this test alone; its Redis keys and AMQP queues are removed afterwards."""
    name = f"t{uuid.uuid4().hex[:12]}"
    yield name
    _cleanup_redis(name)
    _cleanup_amqp(name)


def _cleanup_redis(name: str) -> None:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(match=f"{name}:*", count=1000))
    for start in range(0, len(keys), 500):
        client.delete(*keys[start : start + 500])
    client.close()


def _cleanup_amqp(name: str) -> None:
    import asyncio

    async def run() -> None:
        topology = Topology(name)
        try:
            connection = await aio_pika.connect(AMQP_URL, timeout=5)
        except Exception:
            return
        async with connection:
            queues = [
                topology.incoming,
                topology.dead,
                *(topology.delay_queue(s) for s in DEFAULT_TEST_DELAYS),
            ]
            for queue in queues:
                channel = await connection.channel()
                with contextlib.suppress(Exception):
                    await channel.queue_delete(queue)
            for exchange in (topology.exchange, topology.dead_exchange):
                channel = await connection.channel()
                with contextlib.suppress(Exception):
                    await channel.exchange_delete(exchange)

    asyncio.run(run())


@pytest.fixture
async def store(namespace: str) -> AsyncIterator[Store]:
    handle = Store.connect(REDIS_URL, namespace)
    yield handle
    await handle.close()


@pytest.fixture(autouse=True)
def cheap_argon2(monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process hashing is still argon2id, with the lightest parameters the settings accept: the default ones cost
    ~0.3 s a hash on a busy 2-core machine and would dominate the tests. Verification follows the parameters stored
    in each hash; service processes keep their configured ones. The module's state is restored after the test."""
    monkeypatch.setattr(passwords, "_hasher", passwords._hasher)
    monkeypatch.setattr(passwords, "_DUMMY_HASH", passwords._DUMMY_HASH)
    monkeypatch.setattr(passwords, "_checker", passwords._checker)
    passwords.configure(Argon2Settings(argon2_memory_kib=1024, argon2_time_cost=1, argon2_parallelism=1))


@pytest.fixture
def harness(namespace: str, tmp_path: Path) -> Iterator[Harness]:
    """Starts services for this test (tests/harness.py); every one is stopped at teardown."""
    services = Harness(namespace, tmp_path)
    yield services
    services.stop()


@pytest.fixture
async def harness_in_loop(harness: Harness) -> AsyncIterator[Harness]:
    """The harness, for an async test that runs services on its own loop (`await harness.in_loop(...)`)."""
    yield harness
    await harness.stop_in_loop()


@pytest.fixture
def base_env(harness: Harness) -> dict[str, str]:
    """Environment of this test's service processes: its namespace, loopback listeners on free ports."""
    return harness.env


@pytest.fixture
def start_service(harness: Harness) -> Callable[..., ServiceProcess]:
    """Start `python -m services.<name>` with the test's environment plus overrides, ready on return."""
    return harness.process
