"""Connection helpers for RabbitMQ (aio-pika robust connection) and Redis (redis-py asyncio, single or cluster)."""

from __future__ import annotations

from typing import Any

import aio_pika
from aio_pika.abc import AbstractRobustConnection
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster


async def connect_amqp(url: str, name: str) -> AbstractRobustConnection:
    """A connection that reconnects by itself and re-opens its channels after a broker restart."""
    return await aio_pika.connect_robust(url, client_properties={"connection_name": name}, timeout=10)


def connect_redis(url: str, cluster: bool = False, **options: Any) -> Any:
    """A Redis client (plain or cluster); bytes in, bytes out, so message bodies stay untouched.

    `options` are passed to redis-py as they are (e.g. `socket_connect_timeout`).
    """
    if cluster:
        return RedisCluster.from_url(url, decode_responses=False, **options)
    return Redis.from_url(url, **{"decode_responses": False, "health_check_interval": 30, **options})
