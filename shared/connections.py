"""Connection helpers for RabbitMQ (aio-pika robust connection) and Redis (redis-py asyncio, single or cluster)."""

from __future__ import annotations

import contextlib
from typing import Any, TypeVar

import aio_pika
from aio_pika.abc import AbstractConnection, AbstractRobustConnection
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import RedisCluster

Connection = TypeVar("Connection", aio_pika.Connection, aio_pika.RobustConnection)


async def _open(kind: type[Connection], url: str, name: str, timeout: float) -> Connection:
    """`aio_pika.connect` / `connect_robust`, except that a failed attempt closes what it opened: aio_pika leaves
    it to the garbage collector, whose `__del__` schedules the close on a loop that may have stopped by then."""
    connection = kind(aio_pika.connection.make_url(url), client_properties={"connection_name": name})
    try:
        await connection.connect(timeout=timeout)
    except BaseException:
        with contextlib.suppress(Exception):
            await connection.close()
        raise
    return connection


async def connect_amqp(url: str, name: str) -> AbstractRobustConnection:
    """A connection that reconnects by itself and re-opens its channels after a broker restart."""
    return await _open(aio_pika.RobustConnection, url, name, 10)


async def connect_amqp_once(url: str, name: str, timeout: float = 10) -> AbstractConnection:
    """A plain connection, for a caller that reconnects in its own way (or not at all)."""
    return await _open(aio_pika.Connection, url, name, timeout)


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
