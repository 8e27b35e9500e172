"""Connection helpers for RabbitMQ (aio-pika robust connection) and Redis (redis-py asyncio, single or cluster)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any, TypeVar

import aio_pika
from aio_pika.abc import AbstractConnection, AbstractRobustConnection
from pamqp.common import FieldTable
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.driver_info import DriverInfo
from redis.exceptions import ConnectionError as RedisConnectionError
from yarl import URL

from shared.redis_packing import with_hiredis_packing

Connection = TypeVar("Connection", aio_pika.Connection, aio_pika.RobustConnection)


def amqp_nodes(url: str) -> list[URL]:
    """The broker nodes of POSTROOM_AMQP_URL: one URL, or the comma-separated URLs of a cluster's nodes (a comma
    inside a password is written %2C)."""
    nodes = [aio_pika.connection.make_url(part.strip()) for part in url.split(",") if part.strip()]
    if not nodes:
        raise ValueError("POSTROOM_AMQP_URL names no broker")
    return nodes


class FailoverRobustConnection(aio_pika.RobustConnection):
    """A robust connection over the nodes of a cluster. Each (re)connect attempt goes to one node; an attempt that
    fails, or a connection that is lost, moves on to the next node round the list: a dead node is left for the next
    live one, and come back to once the others die. Quorum queues make every node serve the same queues.

    aio-pika reconnects by calling Connection.connect, which reads `self.url` once per attempt; `url` is a property
    here that hands out the node of the attempt (aio-pika is pinned in pyproject.toml; tests/shared/
    test_amqp_failover.py fails if an upgrade moves that seam)."""

    def __init__(self, nodes: list[URL], first: int, **kwargs: Any) -> None:
        self._nodes = nodes
        self._node = first % len(nodes)
        self._attempting = False
        super().__init__(nodes[self._node], **kwargs)
        self._attempting = False  # Connection.__init__ read `url` for its query parameters: that was no attempt

    @property
    def url(self) -> URL:
        if self._attempting:  # the attempt before this one never connected
            self._node = (self._node + 1) % len(self._nodes)
        self._attempting = True
        return self._nodes[self._node]

    @url.setter
    def url(self, value: URL) -> None:
        """Connection.__init__ assigns the first node; the list stays the truth."""

    @property
    def node(self) -> URL:
        """The node this connection uses (or tries) now."""
        return self._nodes[self._node]

    def __str__(self) -> str:
        node = self.node
        return str(node.with_password("******") if node.password else node)

    async def _on_connected(self) -> None:
        self._attempting = False
        await super()._on_connected()

    async def _on_connection_close(self, closing: asyncio.Future[Any]) -> None:
        if not self._attempting:  # an established connection lost: its node is suspect, try the next one first
            self._node = (self._node + 1) % len(self._nodes)
        await super()._on_connection_close(closing)


async def _open(make: Callable[[int], Connection], count: int, timeout: float) -> Connection:
    """Connect to the first node that answers, in the order given. A failed attempt closes what it opened: aio_pika
    leaves that to the garbage collector, whose `__del__` schedules the close on a loop that may have stopped."""
    for node in range(count):
        connection = make(node)
        try:
            await connection.connect(timeout=timeout)
        except BaseException:
            with contextlib.suppress(Exception):
                await connection.close()
            if node == count - 1:
                raise
            continue
        return connection
    raise AssertionError("unreachable: no node to connect to")


async def connect_amqp(url: str, name: str) -> AbstractRobustConnection:
    """A connection that reconnects by itself, fails over between a cluster's nodes, and re-opens its channels."""
    nodes = amqp_nodes(url)
    properties: FieldTable = {"connection_name": name}
    return await _open(
        lambda first: FailoverRobustConnection(nodes, first, client_properties=properties), len(nodes), 10
    )


async def connect_amqp_once(url: str, name: str, timeout: float = 10) -> AbstractConnection:
    """A plain connection to the first live node, for a caller that reconnects in its own way (or not at all)."""
    nodes = amqp_nodes(url)
    properties: FieldTable = {"connection_name": name}
    return await _open(lambda node: aio_pika.Connection(nodes[node], client_properties=properties), len(nodes), timeout)


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
            # Resolved once here: left to each new connection, redis-py reads its own package metadata from disk
            # (importlib.metadata, about 0.25 ms) every time the pool grows or reconnects.
            "driver_info": DriverInfo(),
            **options,
        },
    )
    # from_url picks the class from the URL's scheme; each of redis-py's three gets its hiredis-packing variant.
    pool.connection_class = with_hiredis_packing(pool.connection_class)
    return Redis(connection_pool=pool)


def untimed(redis: Any, max_connections: int = 1) -> tuple[Any, float | None]:
    """A client to `redis`'s server, with a pool of its own of at most `max_connections`, that reads without redis-py's
    socket timeout, and that timeout; `redis` itself and None when it has none (or is a cluster client, which handles
    its own).

    redis-py applies its socket timeout to every reply it reads (a timer started and cancelled per reply) and to every
    send (a task per send). Whoever sends many commands per round trip (services/store/coalesce.py) saves those by
    applying the timeout once, to the whole round trip, on such a client. A coalescer has one round trip in flight at
    a time, so one connection serves it: the service's connections to Redis stay those of its main pool plus one.
    """
    pool = getattr(redis, "connection_pool", None)
    if isinstance(redis, RedisCluster) or pool is None:
        return redis, None
    timeout = pool.connection_kwargs.get("socket_timeout")
    if not timeout:
        return redis, None
    options = dict(pool.connection_kwargs)
    options["socket_timeout"] = None
    # Connecting stays bounded: by its own timeout, or else by the one the reads had.
    options["socket_connect_timeout"] = options.get("socket_connect_timeout") or timeout
    if isinstance(pool, BlockingConnectionPool):
        options["timeout"] = pool.timeout
    sibling = type(pool)(connection_class=pool.connection_class, max_connections=max_connections, **options)
    return Redis(connection_pool=sibling), float(timeout)
