"""Connection helpers for RabbitMQ (aio-pika robust connection) and Redis (redis-py asyncio, single or cluster)."""

from __future__ import annotations

from typing import Any

import aio_pika
from aio_pika.abc import AbstractRobustConnection
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import RedisCluster


async def connect_amqp(url: str, name: str) -> AbstractRobustConnection:
    """A connection that reconnects by itself and re-opens its channels after a broker restart."""
    return await aio_pika.connect_robust(url, client_properties={"connection_name": name}, timeout=10)


def connect_redis(url: str, cluster: bool = False, max_connections: int = 200, **options: Any) -> Any:
    """A Redis client (plain or cluster); bytes in, bytes out, so message bodies stay untouched.

    The single-node pool waits for a free connection (up to 10 s) instead of failing: redis-py's default pool raises
    MaxConnectionsError once its limit of commands is in flight, which would turn a burst into errors.
    `options` are passed to redis-py as they are (e.g. `socket_connect_timeout`).
    """
    if cluster:
        return RedisCluster.from_url(url, decode_responses=False, **options)
    pool = BlockingConnectionPool.from_url(
        url, **{"max_connections": max_connections, "timeout": 10, "health_check_interval": 30, **options}
    )
    return Redis(connection_pool=pool)
