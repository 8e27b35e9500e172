"""Connection helpers for RabbitMQ (aio-pika robust connection) and Redis (redis-py asyncio, single or cluster)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, TypeVar

import aio_pika
from aio_pika.abc import AbstractConnection, AbstractRobustConnection
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

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


def publishing_blocked(connection: AbstractConnection) -> bool:
    """True while the broker blocks this connection (connection.blocked: a memory or disk alarm).

    RabbitMQ blocks a connection the first time it publishes during an alarm: from then on it reads nothing from
    that socket (acks included) until the alarm clears and it sends connection.unblocked. aiormq records the state
    only in a private event, which its public `ready()` waits on; it is read here and nowhere else (aiormq is pinned
    to 7.2 in pyproject.toml; tests/shared/test_connections.py fails if an upgrade moves it).
    """
    transport = connection.transport
    if transport is None:
        return False
    unblocked = getattr(transport.connection, "_Connection__connection_unblocked", None)
    return isinstance(unblocked, asyncio.Event) and not unblocked.is_set()


# A command that meets a dead connection is sent again on a new one, this many times, 0.1 s then 0.2 s apart.
REDIS_RETRIES = 2


def redis_retry() -> Retry:
    """How a Redis client rides over a restart or failover: after a Redis restart every pooled connection is dead,
    and without a retry the first command on each one fails (a /readyz, a POP3 login, an RCPT answered 451).

    Only connection errors are retried (refused, reset, closed by the server, LOADING), never timeouts: a Redis that
    hangs must still fail within the configured socket timeouts, not a multiple of them, and one that stays down
    fails after the short backoff. Repeating a command whose connection died after it was sent may run it twice,
    which every command the store sends allows: reads; SET, HSET, SADD, SREM, DEL, EXPIRE and the lock scripts reach
    the same state again (a repeated SADD of a domain may report it as already there); STORE_MESSAGE finds its dedup
    key and answers "duplicate", which delivery counts as stored; DELETE_MESSAGES finds nothing left to remove;
    CREATE_ACCOUNT, UPDATE_ACCOUNT and ACQUIRE_LOCK recognise their own earlier write (lua.py). What may count twice
    is a trace event or a counter (RPUSH, INCRBY), which only inform.
    """
    return Retry(ExponentialBackoff(cap=0.2, base=0.05), REDIS_RETRIES, supported_errors=(RedisConnectionError,))


def connect_redis(url: str, cluster: bool = False, max_connections: int = 200, **options: Any) -> Any:
    """A Redis client (plain or cluster); bytes in, bytes out, so message bodies stay untouched.

    The single-node pool waits for a free connection (up to 10 s) instead of failing: redis-py's default pool raises
    MaxConnectionsError once its limit of commands is in flight, which would turn a burst into errors. Both kinds
    reconnect transparently (`redis_retry`); the cluster client also retries a timeout, after refreshing its slot
    map, which is how redis-py follows a failover.
    `options` are passed to redis-py as they are (e.g. `socket_connect_timeout`).
    """
    if cluster:
        return RedisCluster.from_url(url, **{"decode_responses": False, "retry": redis_retry(), **options})
    pool = BlockingConnectionPool.from_url(
        url,
        **{
            "max_connections": max_connections,
            "timeout": 10,
            "health_check_interval": 30,
            "retry": redis_retry(),
            **options,
        },
    )
    return Redis(connection_pool=pool)
