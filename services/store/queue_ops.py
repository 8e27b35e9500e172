"""Queue operations over plain AMQP 0-9-1 (no management plugin): status, dead letters listed, requeued, purged.

Status touches no message: depth and consumers come from passive queue declarations only.

Listing touches at most `limit` dead letters and copies none: they are taken with basic.get (unacked), read, and
handed back with one basic.nack(requeue). The broker keeps the very messages, bodies and properties untouched and
nothing re-sent; if we die half-way the broker hands back what we held, so a listing can neither lose nor duplicate.
What a return costs, with quorum queues (RabbitMQ 3.10+):
- the messages handed back go to the back of the dead queue, so a listing moves what it shows to the end and the
  next listing shows the ones after (RabbitMQ keeps no order among more than a few dozen returned at once);
- they carry the redelivered flag and an `x-delivery-count` one higher. The dead queue has no delivery limit, so on
  RabbitMQ 3.x nothing follows from that. RabbitMQ 4.3+ counts a basic.nack as "released", not as a failed
  delivery; 4.0-4.2 count every return against their default delivery limit of 20, and there the dead queue needs
  a `delivery-limit: -1` policy, or dead letters listed twenty times would be dropped.
Taking and republishing each message instead, as listing once did, rewrites what it touches (new messages, every
body sent back and forth) and moves it to the back too; keeping the order that way meant cycling the whole queue
on every look, up to 10,000 bodies whatever the limit.

Requeueing cycles the dead queue: each message is taken with basic.get, copied to `incoming` (the chosen ones) or
to the tail of the same queue (the others) on a channel with publisher confirms, and only then acked. Nothing is
lost if we die half-way (at worst a message is there twice). The channel closes only once the queue has applied
every ack (see `settled`): a quorum queue hands back on close what a channel had not yet passed on. Purging is
queue.purge.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import aio_pika
import aiormq
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage

from shared.connections import connect_amqp_once
from shared.envelope import HEADER_PREFIX, REQUEUED
from shared.topology import Topology

# A dead queue larger than this is cycled only this far in one call (bounded time per request).
MAX_CYCLE = 10_000
# How long a listing waits for the dead letters it handed back to be ready again (see QueueOps._returned), and a
# cycle for the queue to apply its acks before it closes its channel (see settled).
RETURN_WAIT = 5.0
# Messages taken before their copies are published together and the confirms awaited as one.
_BATCH = 200
# Broker-set headers a requeued message must not carry back into the work queue.
_BROKER_HEADERS = ("x-death", "x-delivery-count", "x-first-death-", "x-last-death-")


class QueueError(Exception):
    """RabbitMQ is unreachable or refused an operation; the text is safe to show."""


class BrokerUnavailable(QueueError):
    """RabbitMQ cannot be reached or gives no channel: worth trying again later (the CLI's exit status 75)."""


@dataclass(frozen=True)
class QueueInfo:
    name: str
    kind: str  # incoming, delay, dead
    exists: bool
    messages: int
    consumers: int
    delay_seconds: int | None = None


@dataclass(frozen=True)
class DeadLetter:
    queue_id: str
    mail_from: str
    recipients: list[str]
    size: int
    first_seen: float | None
    attempt: int
    reason: str


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _dead_letter(message: AbstractIncomingMessage) -> DeadLetter:
    headers = dict(message.headers or {})

    def header(name: str, default: Any = "") -> Any:
        return headers.get(f"{HEADER_PREFIX}{name}", default)

    try:
        first_seen: float | None = float(_text(header("first-seen")))
    except ValueError:
        first_seen = None
    try:
        attempt = int(_text(header("attempt", 0)))
    except ValueError:
        attempt = 0
    return DeadLetter(
        queue_id=_text(message.message_id or header("queue-id")),
        mail_from=_text(header("mail-from")),
        recipients=[_text(r) for r in header("rcpt-to", []) or []],
        size=len(message.body),
        first_seen=first_seen,
        attempt=attempt,
        reason=_text(headers.get("x-first-death-reason", "unknown")),
    )


# The properties a copy keeps from its original, besides the body and the headers.
_KEPT = ("content_type", "content_encoding", "message_id", "timestamp", "type", "app_id")
# What a cycle publishes for a batch it took: a copy and its routing key per message, in the batch's order.
Route = Callable[[list[AbstractIncomingMessage]], Awaitable[list[tuple[aio_pika.Message, str]]]]
# Told of a batch once the broker confirmed its copies, before the originals are acked.
Confirmed = Callable[[list[AbstractIncomingMessage]], Awaitable[None]]


def copy(message: AbstractIncomingMessage, *, clean: bool = False, expiration: float | None = None) -> aio_pika.Message:
    """A persistent copy to publish: `clean` for one going back to work, without the broker's headers and marked as
    requeued, so the delivery reads its progress record (it may have been partly delivered before it died);
    `expiration`, what is left of its wait for one put back in a delay queue."""
    headers = dict(message.headers or {})
    if clean:
        headers = {k: v for k, v in headers.items() if not k.startswith(_BROKER_HEADERS)}
        headers[REQUEUED] = True
    kept = {name: getattr(message, name) for name in _KEPT}
    return aio_pika.Message(
        message.body, headers=headers, delivery_mode=aio_pika.DeliveryMode.PERSISTENT, expiration=expiration, **kept
    )


async def take(queue: Any, limit: int) -> list[AbstractIncomingMessage]:
    """Up to `limit` messages got from `queue` unacknowledged (fewer when it runs dry): the caller acks or nacks
    each once what it stands for is safe elsewhere."""
    batch: list[AbstractIncomingMessage] = []
    while len(batch) < limit:
        message = await queue.get(no_ack=False, fail=False)
        if message is None:
            break
        batch.append(message)
    return batch


async def cycle(
    channel: AbstractChannel, name: str, budget: int, route: Route, stay: str, confirmed: Confirmed | None = None
) -> int:
    """Take each ready message of queue `name` once (at most `budget`), in batches; publish the copies `route`
    makes of a batch on `channel` (a confirming one), and ack the batch only once every copy is confirmed: a crash
    in between duplicates, never loses (docs/design.md invariant 3). `confirmed` hears of each batch as soon as its
    copies are, before the acks and the wait for them. Returns once the queue has applied the acks, so closing the
    channel hands back none of the messages acked. How many were taken; 0 if there is no queue."""
    try:
        queue = await channel.declare_queue(name, passive=True)
    except aiormq.exceptions.ChannelNotFoundEntity:
        return 0
    others = queue.declaration_result.consumer_count or 0
    remaining = min(queue.declaration_result.message_count or 0, budget)
    taken = 0
    while remaining > 0:
        batch = await take(queue, min(remaining, _BATCH))
        if not batch:
            break
        remaining -= len(batch)
        taken += len(batch)
        copies = await route(batch)
        try:
            # Published in order, confirms awaited together.
            await asyncio.gather(*(channel.default_exchange.publish(c, key, mandatory=True) for c, key in copies))
        except aiormq.exceptions.DeliveryError as exc:
            # Returned or nacked (e.g. `incoming` missing): the originals stay unacked and go back to their queue
            # when the channel closes. Copies already confirmed are duplicates, not losses; the batches acked
            # before must not come back too.
            await settled(channel, name, others + len(batch))
            raise QueueError(f"RabbitMQ refused to take the messages ({exc!r}); they stay {stay}") from None
        if confirmed is not None:
            await confirmed(batch)
        await batch[-1].ack(multiple=True)
    if taken:
        await settled(channel, name, others)
    return taken


async def settled(channel: AbstractChannel, name: str, held: int) -> None:
    """Wait, briefly, until quorum queue `name` counts at most `held` messages taken with basic.get and not settled.

    RabbitMQ settles each message taken with basic.get on its own (one raft command per delivery tag, whatever
    `multiple` says), and a channel has at most 32 commands (`quorum_commands_soft_limit`) under way to a quorum
    queue: it keeps the settles past that until the queue has applied earlier commands. Closing the channel drops
    what it kept, and the queue hands those messages back: acked, copied, and in the queue again. A synchronous
    method after the acks does not help: the channel answers it without waiting for the queue. What tells is the
    queue itself, which counts each unsettled get as a consumer until it applies its settle. Bounded: another
    client's gets on the same queue can keep the count up, and then the channel closes as before."""
    await _until(channel, name, lambda ok: (ok.consumer_count or 0) <= held)


async def _until(channel: AbstractChannel, name: str, done: Callable[[Any], bool]) -> None:
    """Poll queue `name`'s passive declaration until `done` holds for it, at most RETURN_WAIT seconds; a queue or
    channel gone has nothing left to wait for."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + RETURN_WAIT
    pause = 0.001  # the queue usually gets there within milliseconds: look again soon, then less often
    while not channel.is_closed:
        try:
            queue = await channel.declare_queue(name, passive=True)
        except aiormq.exceptions.ChannelNotFoundEntity:
            return
        if done(queue.declaration_result) or loop.time() >= deadline:
            return
        await asyncio.sleep(pause)
        pause = min(2 * pause, 0.02)


class QueueOps:
    """Opens an AMQP connection on first use and keeps it; every operation uses channels of its own."""

    def __init__(self, amqp_url: str, namespace: str, delays: Iterable[int]) -> None:
        self.amqp_url = amqp_url
        self.topology = Topology(namespace)
        self.delays = sorted(set(delays))
        self._connection: AbstractConnection | None = None
        self._connect_lock = asyncio.Lock()
        # One cycle of the dead queue at a time from this process, so two requests do not list each other's copies.
        self._dead_lock = asyncio.Lock()

    async def _connect(self) -> AbstractConnection:
        async with self._connect_lock:
            if self._connection is None or self._connection.is_closed:
                try:
                    self._connection = await connect_amqp_once(self.amqp_url, "postroom-store")
                except (TimeoutError, OSError, aiormq.exceptions.AMQPError) as exc:
                    raise BrokerUnavailable(f"cannot reach RabbitMQ (POSTROOM_AMQP_URL): {exc}") from None
            return self._connection

    @contextlib.asynccontextmanager
    async def channel(self, confirms: bool = False) -> AsyncIterator[AbstractChannel]:
        connection = await self._connect()
        try:
            channel = await connection.channel(publisher_confirms=confirms, on_return_raises=confirms)
        except (aiormq.exceptions.AMQPError, OSError) as exc:
            # Opened again on the next request; this one is closed, not left to the garbage collector.
            self._connection = None
            with contextlib.suppress(Exception):
                await connection.close()
            raise BrokerUnavailable(f"RabbitMQ refused a channel: {exc}") from None
        try:
            yield channel
        finally:
            if not channel.is_closed:
                with contextlib.suppress(Exception):
                    await channel.close()

    async def _inspect(self, name: str, kind: str, delay: int | None = None) -> QueueInfo:
        # A passive declare of a missing queue closes the channel (404), so each queue gets a channel.
        async with self.channel() as channel:
            try:
                queue = await channel.declare_queue(name, passive=True)
            except aiormq.exceptions.ChannelNotFoundEntity:
                return QueueInfo(name, kind, False, 0, 0, delay)
            result = queue.declaration_result
            return QueueInfo(name, kind, True, result.message_count or 0, result.consumer_count or 0, delay)

    async def status(self) -> list[QueueInfo]:
        """Every queue of the topology: incoming, one delay queue per retry step, dead."""
        t = self.topology
        infos = [await self._inspect(t.incoming, "incoming")]
        for seconds in self.delays:
            infos.append(await self._inspect(t.delay_queue(seconds), "delay", seconds))
        infos.append(await self._inspect(t.dead, "dead"))
        return infos

    async def _cycle_dead(self, requeue: set[str] | None, everything: bool, limit: int) -> tuple[list[DeadLetter], int]:
        """Take each dead letter once; requeue the chosen ones, put the rest back at the tail. (listed, requeued)"""
        listed: list[DeadLetter] = []
        moved: list[DeadLetter] = []
        t = self.topology

        async def route(batch: list[AbstractIncomingMessage]) -> list[tuple[aio_pika.Message, str]]:
            infos = [_dead_letter(m) for m in batch]
            chosen = [everything or (requeue is not None and i.queue_id in requeue) for i in infos]
            moved.extend(i for i, c in zip(infos, chosen, strict=True) if c)
            listed.extend(i for i, c in zip(infos, chosen, strict=True) if not c)
            return [(copy(m, clean=c), t.incoming if c else t.dead) for m, c in zip(batch, chosen, strict=True)]

        async with self._dead_lock, self.channel(confirms=True) as channel:
            await cycle(channel, t.dead, MAX_CYCLE, route, "dead")
        return listed[:limit], len(moved)

    async def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        """The first `limit` dead letters of the dead queue, touching no others; they stay in it, moved to its back."""
        if limit <= 0:
            return []
        async with self._dead_lock, self.channel() as channel:
            try:
                dead = await channel.declare_queue(self.topology.dead, passive=True)
            except aiormq.exceptions.ChannelNotFoundEntity:
                return []
            ready = dead.declaration_result.message_count or 0
            taken = await take(dead, limit)
            if taken:
                # nack, not reject: RabbitMQ 4.3+ counts basic.reject as a failed delivery, basic.nack as not.
                await taken[-1].nack(multiple=True, requeue=True)
                await self._returned(channel, ready)
            return [_dead_letter(message) for message in taken]

    async def _returned(self, channel: AbstractChannel, ready: int) -> None:
        """Wait, briefly, until the dead queue is as deep as before we took from it: a quorum queue applies returns
        after answering, and a status or listing right after ours should find the messages there. Bounded: other
        clients may take from the queue meanwhile, so the depth may never come back."""
        await _until(channel, self.topology.dead, lambda ok: (ok.message_count or 0) >= ready)

    async def requeue(self, queue_ids: Iterable[str] | None) -> int:
        """Move dead letters (all of them when `queue_ids` is None) back to `incoming`; how many moved."""
        wanted = None if queue_ids is None else set(queue_ids)
        if wanted is not None and not wanted:
            return 0
        return (await self._cycle_dead(wanted, wanted is None, 0))[1]

    async def purge(self) -> int:
        """Delete every dead letter; how many there were.

        Their delivery progress records (progress.py) stay: naming them would mean taking every dead letter, body and
        all (up to 25 MiB each), off the broker instead of one queue.purge. Each is one small hash, and only a
        message that was handed back to the broker has one without a TTL."""
        async with self.channel() as channel:
            try:
                dead = await channel.declare_queue(self.topology.dead, passive=True)
            except aiormq.exceptions.ChannelNotFoundEntity:
                return 0
            result = await dead.purge()
            return int(result.message_count or 0)

    async def close(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(Exception):
                await self._connection.close()
            self._connection = None
