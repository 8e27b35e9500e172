"""Publishing accepted messages to RabbitMQ with confirms, over a broker connection the ingress keeps up itself."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Coroutine
from typing import Any

from aio_pika.abc import AbstractChannel, AbstractConnection
from aio_pika.exceptions import DeliveryError, PublishError
from aiormq.channel import Channel

from services.smtp_ingress import metrics
from services.smtp_ingress.amqp_stream import IncomingExchange
from shared.connections import connect_amqp_once, publishing_blocked
from shared.envelope import Envelope
from shared.errors import TemporaryError
from shared.logging import get_logger
from shared.spool import MessageSpool
from shared.tasks import cancel_and_wait
from shared.topology import Topology

log = get_logger(__name__)

# The ingress starts and serves even while the broker is down: a supervisor task connects, declares the
# topology and re-connects with backoff after any loss. A publish without an open channel fails at once (451)
# instead of waiting for a reconnect, so a client is never held beyond the publish timeout (invariant 1).
RECONNECT_MIN = 0.2
RECONNECT_MAX = 5.0


class IngressPublisher:
    """One connection and one confirming channel; many publishes in flight on it, each awaiting its own confirm."""

    def __init__(self, url: str, namespace: str, timeout: float) -> None:
        self.url = url
        self.topology = Topology(namespace)
        self.timeout = timeout
        self._connection: AbstractConnection | None = None
        self._channel: AbstractChannel | None = None
        self._exchange: IncomingExchange | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing: set[asyncio.Task[None]] = set()

    @property
    def ready(self) -> bool:
        channel, connection = self._channel, self._connection
        return (
            self._exchange is not None
            and connection is not None
            and not connection.is_closed
            and channel is not None
            and not channel.is_closed
        )

    def start(self) -> None:
        self._task = asyncio.create_task(self._supervise(), name="amqp-supervisor")

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)
        if self._closing:
            await asyncio.wait(list(self._closing), timeout=5)
        await self._disconnect()

    async def _supervise(self) -> None:
        delay = RECONNECT_MIN
        while True:
            try:
                lost = await self._connect()
                delay = RECONNECT_MIN
                log.info("broker connected")
                await lost
                log.warning("broker connection lost; reconnecting")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("broker unavailable", error=f"{type(exc).__name__}: {exc}")
            await self._disconnect()
            await asyncio.sleep(delay)
            delay = min(delay * 2, RECONNECT_MAX)

    async def _connect(self) -> asyncio.Future[None]:
        connection = await connect_amqp_once(self.url, "postroom-smtp-ingress", timeout=5)
        self._connection = connection
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        self._channel = channel
        declared = await self.topology.declare(channel)
        # aio_pika opened the channel and declared the topology; publishes go to its aiormq channel directly.
        underlay = await channel.get_underlay_channel()
        assert isinstance(underlay, Channel)
        exchange = IncomingExchange(underlay, declared.name, self.topology.incoming)
        lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def on_close(*_: Any) -> None:
            self._exchange = None
            metrics.BROKER_CONNECTED.set(0)
            if not lost.done():
                lost.set_result(None)

        connection.close_callbacks.add(on_close)
        channel.close_callbacks.add(on_close)
        self._exchange = exchange
        metrics.BROKER_CONNECTED.set(1)
        return lost

    async def _disconnect(self) -> None:
        self._exchange = None
        metrics.BROKER_CONNECTED.set(0)
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None and not connection.is_closed:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(connection.close(), 5)

    async def publish(self, body: bytes, envelope: Envelope) -> None:
        """Return once the broker confirmed the message; raise TemporaryError on anything else."""
        exchange = self._exchange
        if exchange is None or not self.ready:
            raise self._failure("unavailable", "no broker connection")
        self._refuse_while_blocked()
        await self._confirmed(exchange.publish(body, envelope))

    async def publish_spooled(self, prefix: bytes, spool: MessageSpool, envelope: Envelope) -> None:
        """`publish` for a message in a spool file: `prefix` and the file's text go out a frame at a time."""
        exchange, connection = self._exchange, self._connection
        if exchange is None or connection is None or not self.ready:
            raise self._failure("unavailable", "no broker connection")
        self._refuse_while_blocked()

        def drop_connection() -> None:
            # Part of the message went out: the channel is inside an unfinished content, so the connection goes
            # (the broker discards the incomplete message) and the supervisor makes a new one.
            log.warning("broker connection dropped after an incomplete publish", queue_id=envelope.queue_id)
            self._exchange = None
            task = asyncio.create_task(connection.close())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

        await self._confirmed(exchange.publish_streamed(prefix, spool, envelope, on_partial=drop_connection))

    def _refuse_while_blocked(self) -> None:
        """451 at once while the broker blocks our connection (a memory or disk alarm), without writing anything:
        the broker reads nothing from the connection until the alarm clears, so a publish written now would wait
        out the timeout, be answered 451, and still be queued when the alarm clears, a second copy once the client
        sends the message again. New publishes go out again as soon as the broker sends connection.unblocked."""
        if self._connection is not None and publishing_blocked(self._connection):
            raise self._failure("blocked", "the broker blocks publishing (resource alarm)")

    async def _confirmed(self, publish: Coroutine[Any, Any, object]) -> None:
        """Wait for the publish's confirm, within the publish timeout; every failure becomes a TemporaryError."""
        started = time.monotonic()
        try:
            # asyncio.timeout, not wait_for: no task of its own per publish (and no swallowed cancellation, 3.11).
            async with asyncio.timeout(self.timeout):
                await publish
        except TimeoutError:
            raise self._failure("timeout", f"no confirm within {self.timeout}s") from None
        except PublishError as exc:
            raise self._failure("returned", f"returned by the broker: {exc}") from None
        except DeliveryError as exc:
            raise self._failure("nack", f"nacked by the broker: {exc}") from None
        except Exception as exc:
            raise self._failure("error", f"{type(exc).__name__}: {exc}") from None
        metrics.PUBLISH_CONFIRM_SECONDS.observe(time.monotonic() - started)

    @staticmethod
    def _failure(reason: str, detail: str) -> TemporaryError:
        metrics.PUBLISH_FAILURES.labels(reason).inc()
        return TemporaryError("publish failed", enhanced="4.3.0", reason=f"{reason}: {detail}")
