"""The Redis and RabbitMQ a Postroom bench run talks to: the shared ones, or private servers of this run alone.

On the shared servers (127.0.0.1:6379, :5672) the CPU the bench reads for Redis and RabbitMQ is the whole server's
during the run, other users' traffic included: an upper bound. A private redis-server (tests/redis_private.py,
without persistence, as the shared one runs) and a private RabbitMQ node (tests/rabbitmq_node.py; needs root: it
runs as the `rabbitmq` user) serve this run only, so their CPU is Postroom's own.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

SHARED_REDIS_URL = "redis://127.0.0.1:6379/0"
SHARED_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"


@dataclass(frozen=True)
class Brokers:
    redis_url: str = SHARED_REDIS_URL
    amqp_url: str = SHARED_AMQP_URL
    # Root pid of each private server whose CPU the bench reads ("redis", "rabbitmq"); the others are shared.
    private: dict[str, int] = field(default_factory=dict)

    def env(self) -> dict[str, str]:
        return {"POSTROOM_REDIS_URL": self.redis_url, "POSTROOM_AMQP_URL": self.amqp_url}

    def sources(self, names: tuple[str, ...] = ("redis", "rabbitmq")) -> dict[str, str]:
        """Where each server's CPU figure comes from, for the output."""
        return {
            name: "private: this run only" if name in self.private else "shared: includes others' traffic (upper bound)"
            for name in names
        }


@contextmanager
def private_redis() -> Iterator[tuple[str, int]]:
    """A redis-server of this run alone, without persistence; yields its URL and pid."""
    from tests.redis_private import PrivateRedis

    directory = Path(tempfile.mkdtemp(prefix="postroom-bench-redis-"))
    redis = PrivateRedis(directory, config=("--save", "", "--appendonly", "no")).start()
    try:
        assert redis.proc is not None
        yield redis.url, redis.proc.pid
    finally:
        redis.stop()
        shutil.rmtree(directory, ignore_errors=True)


@contextmanager
def private_rabbitmq() -> Iterator[tuple[str, int]]:
    """A RabbitMQ node of this run alone (root: the node runs as `rabbitmq`); yields its URL and pid."""
    from tests.rabbitmq_node import RabbitMQNode, unavailable_reason

    reason = unavailable_reason()
    if reason:
        raise SystemExit(f"a private RabbitMQ node is not available: {reason}")
    node = RabbitMQNode().start()
    try:
        assert node.proc is not None
        yield node.url, node.proc.pid
    finally:
        node.stop()


@contextmanager
def brokers(mode: str, amqp: bool) -> Iterator[Brokers]:
    """`mode` "shared": the shared servers. "private": a private redis-server, and with `amqp` a private RabbitMQ
    node too (a scenario that does not use the broker keeps the shared URL and reports no broker CPU)."""
    if mode == "shared":
        yield Brokers()
        return
    with ExitStack() as stack:
        redis_url, redis_pid = stack.enter_context(private_redis())
        private = {"redis": redis_pid}
        amqp_url = SHARED_AMQP_URL
        if amqp:
            amqp_url, private["rabbitmq"] = stack.enter_context(private_rabbitmq())
        yield Brokers(redis_url, amqp_url, private)
