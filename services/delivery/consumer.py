"""The queue consumer: deliver each recipient, then decide in one place to ack, defer, bounce or dead-letter.

Invariant 3 of docs/design.md: a message is acked only after every recipient's outcome is durable — stored in Redis,
relayed with a 2xx, or carried by a retry or bounce message that the broker has confirmed. No exception leads to
an immediate requeue: unsettled recipients are deferred through the delay queues, and what was settled stays
settled on any redelivery (ledger.py says which mechanism makes each redelivery harmless).
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from typing import Any, Protocol

from aio_pika.abc import AbstractQueue, AbstractRobustConnection
from aiormq.abc import DeliveredMessage
from pamqp.commands import Basic

from services.delivery import bounce, metrics, outcome, retry
from services.delivery.acks import AckBatcher, Window
from services.delivery.config import DeliverySettings
from services.delivery.dkim import Signer
from services.delivery.dsnrequest import wanting
from services.delivery.ledger import Ledger
from services.delivery.local import deliver_local, unavailable
from services.delivery.outcome import RecipientOutcome, Status
from services.delivery.publisher import DeliveryPublisher
from services.delivery.queue_control import QueueControl
from services.delivery.remote import TRANSPORT as TRANSPORT_SMTP
from services.delivery.routing import Plan, Router, Target
from services.delivery.waiting import WaitingRoom
from services.store import Store, StoreOutcome, progress
from services.store.keys import normalize_address
from services.store.outage import outage
from shared.dsn import DELAY, FAILURE, SUCCESS
from shared.envelope import REQUEUED, Envelope
from shared.logging import get_logger
from shared.queue_id import is_queue_id
from shared.spool import MEMORY_LIMIT as LARGE_MESSAGE
from shared.srs import Srs
from shared.tasks import cancel_and_wait
from shared.topology import DELIVERY_LIMIT, Topology

log = get_logger(__name__)

# (envelope, message, domain, recipients there, header fields to send in front of the message: DKIM signatures)
RemoteDeliver = Callable[[Envelope, bytes, str, Sequence[Target], bytes], Awaitable[list[RecipientOutcome]]]
SERVICE = "delivery"
# The outcome label of an attempt (metrics) by its status.
_RESULT = {Status.DELIVERED: "delivered", Status.TEMPORARY: "deferred", Status.PERMANENT: "bounced"}


def count_received(message: bytes) -> int:
    """Received: fields in the header section; each relay adds one, so too many means a loop (RFC 5321 §6.3)."""
    end = message.find(b"\r\n\r\n")
    header = message if end < 0 else message[: end + 2]
    return sum(1 for line in header.split(b"\r\n") if line[:9].lower() == b"received:")


class Incoming(Protocol):
    """What the consumer uses of a delivery (a `Delivery`; tests pass stand-ins)."""

    headers: Any
    body: bytes
    message_id: str | None
    redelivered: bool
    channel: Any

    @property
    def delivery_tag(self) -> int | None: ...

    async def ack(self) -> None: ...
    async def nack(self, requeue: bool = True) -> None: ...
    async def reject(self, requeue: bool = False) -> None: ...


class Delivery:
    """One delivery from aiormq, with only what the consumer reads; settled on the channel it came on."""

    __slots__ = ("body", "channel", "delivery_tag", "headers", "message_id", "redelivered")

    def __init__(self, delivered: DeliveredMessage) -> None:
        self.channel = delivered.channel
        frame = delivered.delivery
        # A consumer gets nothing but Basic.Deliver, which always carries a tag.
        assert isinstance(frame, Basic.Deliver) and frame.delivery_tag is not None
        self.delivery_tag: int = frame.delivery_tag
        self.redelivered = bool(frame.redelivered)
        properties = delivered.header.properties
        self.headers: Any = properties.headers
        self.message_id: str | None = properties.message_id
        self.body: bytes = delivered.body

    async def ack(self) -> None:
        await self.channel.basic_ack(self.delivery_tag)

    async def nack(self, requeue: bool = True) -> None:
        await self.channel.basic_nack(self.delivery_tag, requeue=requeue)

    async def reject(self, requeue: bool = False) -> None:
        await self.channel.basic_reject(self.delivery_tag, requeue=requeue)


class Consumer:
    """Consumes `incoming` with manual acks, a prefetch window and a bound on messages worked on at once."""

    def __init__(
        self,
        settings: DeliverySettings,
        store: Store,
        connection: AbstractRobustConnection,
        publisher: DeliveryPublisher,
        remote: RemoteDeliver,
        signer: Signer | None = None,
    ) -> None:
        self.settings = settings
        self.signer = signer  # None: nothing is signed
        self.store = store
        self.connection = connection
        self.publisher = publisher
        self.remote = remote
        self.topology = Topology(settings.namespace)
        self.srs = Srs.of(settings)
        self.router = Router(store.accounts, settings.delivery_alias_depth_limit, self.srs)
        self._slots = asyncio.Semaphore(settings.delivery_concurrency)
        # Large messages (over LARGE_MESSAGE bytes) take one of these as well, taken before a worker slot so that
        # large ones waiting never keep a slot from small ones; their waiting bodies are bounded by `waiting`.
        self._large = asyncio.Semaphore(settings.delivery_large_concurrency)
        self.waiting = WaitingRoom(settings.delivery_memory_budget, settings.delivery_spool_dir)
        self._tasks: set[asyncio.Task[None]] = set()
        self._working: dict[str, asyncio.Future[None]] = {}  # queue id → done when its delivery here has ended
        self._queue: AbstractQueue | None = None
        self._tag: str | None = None
        self._stopping = False
        self._channel: Any = None
        self._acks = AckBatcher(
            settings.delivery_ack_hold, max(1, settings.delivery_prefetch // 4), settings.delivery_ack_interval
        )
        self.control = QueueControl(store, publisher, settings.retry_schedule, self._bounce)

    @property
    def running(self) -> bool:
        return self._tag is not None and self._channel is not None and not self._channel.is_closed

    async def start(self) -> None:
        self._stopping = False
        self._channel = await self.connection.channel()
        await self._channel.set_qos(prefetch_count=self.settings.delivery_prefetch)  # restored with the channel
        self._queue = await self._channel.get_queue(self.topology.incoming, ensure=True)
        # Consumed on the underlying aiormq channel, so each delivery is one task and one small object (aio_pika's
        # consumer wraps it in an IncomingMessage and a second task). aio_pika only restores consumers it made:
        # after a reconnect, `_consume` subscribes again on the new channel.
        self._channel.reopen_callbacks.add(self._reconsume)
        await self._consume()
        metrics.CONSUMER_UP.set(1)
        log.info(
            "consuming",
            queue=self.topology.incoming,
            prefetch=self.settings.delivery_prefetch,
            concurrency=self.settings.delivery_concurrency,
        )

    async def _consume(self) -> None:
        underlay = await self._channel.get_underlay_channel()
        consumed = await underlay.basic_consume(self.topology.incoming, self._on_delivery, no_ack=False)
        self._tag = consumed.consumer_tag

    async def _reconsume(self, channel: Any) -> None:
        if self._stopping:
            return
        self._tag = None
        try:
            await self._consume()
        except Exception as exc:
            # Not consuming: /readyz says so (running is false) and the orchestrator restarts the worker.
            log.error("consuming again after a reconnect failed", error=str(exc))
        else:
            log.info("consuming again after a reconnect", queue=self.topology.incoming)

    async def stop(self, drain_timeout: float | None = None) -> None:
        """Stop taking messages, let those in hand finish (POSTROOM_DELIVERY_DRAIN_TIMEOUT unless given); anything
        unfinished goes back to the queue unacked."""
        if drain_timeout is None:
            drain_timeout = self.settings.delivery_drain_timeout
        metrics.CONSUMER_UP.set(0)
        self._stopping = True
        if self._channel is not None:
            self._channel.reopen_callbacks.discard(self._reconsume)
        if self._channel is not None and self._tag is not None:
            try:
                underlay = await self._channel.get_underlay_channel()
                await underlay.basic_cancel(self._tag)
            except Exception as exc:
                log.warning("cancel failed", error=str(exc))
        self._tag = None
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=drain_timeout)
        # Past the drain timeout: what is still in hand stops here, unacked (the broker redelivers it).
        for task in list(self._tasks):
            await cancel_and_wait(task)
        await self._acks.close()
        if self._channel is not None and not self._channel.is_closed:
            await self._channel.close()

    async def _on_delivery(self, delivered: DeliveredMessage) -> None:
        message = Delivery(delivered)
        # From here the body lives in `message` alone, so that spilling it to a file frees it (waiting.py).
        del delivered
        # Worked on in a task of our own, and aiormq's returns at once: aiormq cancels its consumer tasks when their
        # channel closes (broker gone, consumer_timeout, any channel error), which would cut a relay between the
        # remote 250 and the progress record. Ours finishes; its ack then goes nowhere, and the redelivery finds the
        # work recorded.
        task = asyncio.get_running_loop().create_task(self._on_message(message))
        self._tasks.add(task)
        task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("delivery task failed", exc_info=task.exception())

    async def _on_message(self, message: Incoming) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        # One queue message at a time in this process: a redelivery (after its channel closed) waits for the
        # earlier delivery still finishing here, then reads what that one recorded instead of racing it.
        key = message.message_id or ""
        earlier = self._working.get(key) if key else None
        mine: asyncio.Future[None] | None = None
        if key:
            mine = self._working[key] = asyncio.get_running_loop().create_future()
        try:
            # Registered at once, in delivery order: a batched ack never covers a delivery still being worked on.
            window = self._track(message)
            if earlier is not None:
                await asyncio.shield(earlier)  # shared by later waiters: one cancelled here must not cancel it
            if len(message.body) > LARGE_MESSAGE:
                await self._on_large(message, window)
                return
            async with self._slots:
                await self._work(message, window)
        finally:
            if mine is not None:
                if earlier is not None and not earlier.done():
                    # Cancelled while waiting: whoever waits for this delivery still waits for the earlier one.
                    earlier.add_done_callback(lambda _: self._release(key, mine))
                else:
                    self._release(key, mine)
            if task is not None:
                self._tasks.discard(task)

    def _release(self, key: str, mine: asyncio.Future[None]) -> None:
        """This delivery of queue message `key` has ended: the next one waiting for it may start."""
        if not mine.done():
            mine.set_result(None)
        if self._working.get(key) is mine:
            del self._working[key]

    async def _work(self, message: Incoming, window: Window | None) -> None:
        """`handle` on a worker slot the caller holds, counted as in flight."""
        metrics.IN_FLIGHT.inc()
        try:
            await self.handle(message, window)
        finally:
            metrics.IN_FLIGHT.dec()

    async def _on_large(self, message: Incoming, window: Window | None) -> None:
        """A large message waits for a large slot and a worker with its body in memory while the budget allows,
        else in a spool file; it is still an unacked delivery, so a crash meanwhile loses nothing."""
        # Both free: the slots are taken without suspending, so the body never waits and is not counted.
        waiting = self.waiting.hold(message) if self._large.locked() or self._slots.locked() else None
        try:
            async with self._large, self._slots:
                if waiting is not None:
                    try:
                        self.waiting.take(waiting, message)
                    except OSError as exc:
                        await self._unreadable(message, window, exc)
                        return
                await self._work(message, window)
        finally:
            if waiting is not None:
                self.waiting.discard(waiting)

    async def _unreadable(self, message: Incoming, window: Window | None, exc: OSError) -> None:
        """Its spool file could not be read back: hand the delivery back to the broker, which still has it."""
        log.error("reading a spilled message failed; requeued", message_id=message.message_id, error=str(exc))
        metrics.MESSAGES.labels("requeued").inc()
        try:
            await message.nack(requeue=True)
        except Exception as error:
            log.warning("nack failed; the message will be redelivered", message_id=message.message_id, error=str(error))
            return
        self._settled(message, window)

    async def handle(self, message: Incoming, window: Window | None = None) -> None:
        """Work on one delivery and settle it: acks of tracked deliveries (`window`) go out batched, nacks and
        rejects at once and on their own."""
        try:
            envelope = Envelope.from_headers(dict(message.headers or {}))
        except (ValueError, TypeError) as exc:
            # Not ours: no retry makes it deliverable. Rejecting without requeue dead-letters it (the queue's DLX).
            log.error("not a postroom message; dead-lettering", message_id=message.message_id, error=str(exc))
            metrics.DEAD_LETTERS.labels("malformed").inc()
            queue_id = str(message.message_id or "")
            if is_queue_id(queue_id):
                self._trace(queue_id, "dead-lettered", reason=f"malformed envelope: {exc}")
            metrics.MESSAGES.labels("dead_lettered").inc()
            await message.reject(requeue=False)
            self._settled(message, window)
            return
        body = bytes(message.body)
        last_chance = _delivery_count(message) >= DELIVERY_LIMIT
        ledger = Ledger(self.store.progress, envelope, _resumed(message), last_chance, self.store.queue)
        try:
            if await self.control.admit(envelope, body, ledger):
                await self.process(envelope, body, ledger)
        except Exception as exc:
            if not await self._recover(envelope, body, ledger, exc):
                await self._requeue(message, window, envelope, ledger, len(body))
                return
        if window is not None and message.delivery_tag:
            self._acks.ack(window, message.delivery_tag)
        else:
            await _settle(message.ack(), envelope)

    async def _recover(self, envelope: Envelope, body: bytes, ledger: Ledger, exc: Exception) -> bool:
        """An exception nobody foresaw (a bug, a broker refusing a publish): no immediate requeue, which would repeat
        what was done and, for a failure that repeats, end in the dead-letter queue within seconds. The recipients
        not settled yet are deferred through the delay queues as a temporary failure, and the progress recorded.
        False when even that defer could not be made durable: then the message must go back to the broker."""
        metrics.INTERNAL_ERRORS.inc()
        unsettled = ledger.unsettled()
        log.error(
            "delivery failed unexpectedly; deferring the unsettled recipients",
            queue_id=envelope.queue_id,
            unsettled=len(unsettled),
            exc_info=exc,
        )
        if unsettled:
            if isinstance(exc, DeferFailed):
                return False  # the broker just refused this very publish: hand the message back instead
            text = f"internal error ({type(exc).__name__})"
            deferred = [outcome.temporary(r, "4.3.0", text) for r in unsettled]
            try:
                following = await self._defer(envelope, body, deferred)
            except DeferFailed as error:
                log.error("deferring after an internal error failed", queue_id=envelope.queue_id, error=str(error))
                return False
            ledger.settle(unsettled, progress.deferred(following.attempt))
            await self.control.deferred(ledger, following, deferred, len(body))
        elif ledger.indexed:
            await self.control.finish(ledger)
        await ledger.write(keep=ledger.last_chance)
        (metrics.DEFERRED if unsettled else metrics.DONE).inc()
        return True

    async def _requeue(
        self, message: Incoming, window: Window | None, envelope: Envelope, ledger: Ledger, size: int
    ) -> None:
        """Hand the message back unacked (the broker redelivers it). Its progress is recorded first, without a TTL,
        so the redelivery (even one from the dead-letter queue, much later) repeats nothing that was settled; at
        the delivery limit its queue entry says `dead` in the same step."""
        if ledger.last_chance:
            await self.control.dead(ledger, envelope, size)
        else:
            await ledger.write(keep=True)
        if _delivery_count(message) >= DELIVERY_LIMIT:
            # This was its last delivery: the broker dead-letters it when we hand it back.
            metrics.DEAD_LETTERS.labels("delivery_limit").inc()
            self._trace(envelope.queue_id, "dead-lettered", reason="delivery limit reached")
        metrics.MESSAGES.labels("requeued").inc()
        if await _settle(message.nack(requeue=True), envelope):
            # Only a nack that went out: an unsent one keeps its tag unfinished, so no multiple ack covers it.
            self._settled(message, window)

    def _track(self, message: Incoming) -> Window | None:
        if not message.delivery_tag:
            return None
        return self._acks.track(message.channel, message.delivery_tag)

    def _settled(self, message: Incoming, window: Window | None) -> None:
        """A nack or reject went out for it: later batched acks may span its tag."""
        if window is not None and message.delivery_tag:
            self._acks.settled(window, message.delivery_tag)

    async def process(self, envelope: Envelope, body: bytes, ledger: Ledger) -> None:
        """Deliver every recipient not settled before, then make each failed one durable as a retry or a bounce
        before returning; record progress wherever a later delivery could otherwise repeat a step (ledger.py)."""
        log.info(
            "delivering",
            queue_id=envelope.queue_id,
            attempt=envelope.attempt,
            recipients=len(envelope.recipients),
            redelivered=ledger.resumed,
        )
        outcomes = _restore_originals(await self.deliver(envelope, body, ledger), envelope)
        self._account(envelope, outcomes)
        now = time.time()
        delivered = [o for o in outcomes if o.status is Status.DELIVERED]
        deferred = [o for o in outcomes if o.status is Status.TEMPORARY]
        failed = [o for o in outcomes if o.status is Status.PERMANENT]
        if deferred and retry.expired(envelope.first_seen, now, self.settings.max_queue_lifetime):
            failed += [_give_up(o, envelope) for o in deferred]
            deferred = []
        # Remote delivery is not idempotent: a relay is recorded before anything else can fail. So is every
        # outcome of a message with more than one kind of them, so that a failure half-way repeats none, and every
        # delivery a success notice is sent for: a redelivery then skips those recipients and sends none again.
        success = [o for o in wanting(envelope, delivered, SUCCESS) if not o.dsn_passed]
        if (
            success
            or any(o.transport == TRANSPORT_SMTP for o in delivered)
            or sum(map(bool, (delivered, deferred, failed))) > 1
        ):
            ledger.writing = True
        ledger.settle_each({o.recipient: _durable_state(o) for o in delivered})
        await ledger.flush()
        if success:
            await self._notify_success(envelope, body, success, now)
        if deferred:
            following = await self._defer(envelope, body, deferred)
            ledger.settle((o.recipient for o in deferred), progress.deferred(following.attempt))
            # With its queue entry, in one step (the index lists it from here on).
            await self.control.deferred(ledger, following, deferred, len(body))
            if self._delay_notice_due(envelope, now):
                await self._notify_delay(envelope, body, deferred, now)
        if failed:
            await self._bounce(envelope, body, failed, now)
            ledger.settle((o.recipient for o in failed), progress.BOUNCED)
            await ledger.flush()
        if ledger.indexed and not deferred:
            # This copy has ended: a finished message's queue entry goes with the last progress write.
            await self.control.finish(ledger)
        elif ledger.resumed:
            # Finished: the record now expires with the dedup keys (unless a lost ack would dead-letter it).
            await ledger.write(keep=ledger.last_chance)
        (metrics.DEFERRED if deferred else metrics.DONE).inc()

    async def deliver(self, envelope: Envelope, body: bytes, ledger: Ledger) -> list[RecipientOutcome]:
        """An outcome for every final recipient (after alias expansion) not settled before; raises only for what
        nobody foresaw (the caller defers those recipients as an internal error)."""
        deadline = asyncio.get_running_loop().time() + self.settings.delivery_attempt_timeout
        if ledger.may_be_partly_done:
            try:
                await ledger.load()
            except Exception as exc:
                reason = outage(exc)
                if reason is None:
                    raise
                if ledger.resumed:
                    # What was done before is unknown: deliver nothing now rather than relay anything twice.
                    return unavailable(_targets(envelope), envelope.queue_id, exc, reason, "delivery progress record")
                # A retry copy's own recipients were deferred, not settled: going on risks nothing new.
                log.warning("delivery progress unreadable", queue_id=envelope.queue_id, reason=reason)
        received = count_received(body)
        if received > self.settings.delivery_max_received_headers:
            text = f"mail loop: {received} Received headers"
            return [outcome.permanent(r, "5.4.6", text) for r in envelope.recipients if not ledger.settled(r)]
        try:
            plan = await self.router.plan(envelope.recipients)
        except Exception as exc:
            reason = outage(exc)
            if reason is None:
                raise
            return unavailable(_targets(envelope), envelope.queue_id, exc, reason, "alias lookup")
        self._skip_settled(envelope, plan, ledger)
        if plan.remote and not ledger.indexed:
            await self.control.attempting(envelope, ledger, len(body))
        results = list(plan.failed)
        if plan.local:
            try:
                results += await deliver_local(
                    self.store.mailboxes, plan.local, envelope.queue_id, body, envelope.mail_from
                )
            except Exception as exc:
                results += self._internal_error(envelope, plan.local, exc)
            if self.settings.delivery_fault_crash_after_store:
                # Test hook (POSTROOM_DELIVERY_FAULT_CRASH_AFTER_STORE): die after the store and before the ack.
                os.kill(os.getpid(), signal.SIGKILL)
        if plan.remote:
            relays = self._senders(envelope, plan)
            # Signed once for every domain; never raises, and a failure sends the message unsigned (dkim.py).
            signature = await self.signer.sign(envelope, body) if self.signer is not None else b""
            for group in await asyncio.gather(
                *(self._relay(sent_as, body, domain, group, deadline, signature) for sent_as, domain, group in relays)
            ):
                results += group
        return results

    def _senders(self, envelope: Envelope, plan: Plan) -> list[tuple[Envelope, str, list[Target]]]:
        """Each remote domain's recipients and the envelope they go out under: copies an alias forwards go with an
        SRS sender of the alias's domain (POSTROOM_SRS_SECRET), so the destination's SPF check sees our domain."""
        if self.srs is None or not envelope.mail_from:
            return [(envelope, domain, group) for domain, group in plan.remote.items()]
        relays: list[tuple[Envelope, str, list[Target]]] = []
        for domain, group in plan.remote.items():
            direct = [t for t in group if not t.forwarded]
            if direct:
                relays.append((envelope, domain, direct))
            by_alias: dict[str, list[Target]] = {}
            for target in group:
                if target.forwarded:
                    by_alias.setdefault(normalize_address(target.original).rpartition("@")[2], []).append(target)
            for alias_domain, targets in by_alias.items():
                sender = self.srs.forward(envelope.mail_from, alias_domain)
                relays.append((replace(envelope, mail_from=sender), domain, targets))
        return relays

    def _skip_settled(self, envelope: Envelope, plan: Plan, ledger: Ledger) -> None:
        """Take the recipients settled by an earlier delivery of this queue message out of the plan."""
        ledger.recipients = [
            *(o.recipient for o in plan.failed),
            *(t.address for t in plan.local),
            *(t.address for group in plan.remote.values() for t in group),
        ]
        if not ledger.known:
            return
        skipped = [r for r in ledger.recipients if ledger.settled(r)]
        if not skipped:
            return
        plan.failed = [o for o in plan.failed if not ledger.settled(o.recipient)]
        plan.local = [t for t in plan.local if not ledger.settled(t.address)]
        remote = {d: [t for t in group if not ledger.settled(t.address)] for d, group in plan.remote.items()}
        plan.remote = {d: group for d, group in remote.items() if group}
        metrics.SKIPPED.inc(len(skipped))
        states = {r: ledger.known[r] for r in skipped}
        log.info("settled before; skipped", queue_id=envelope.queue_id, recipients=len(skipped))
        self._trace(envelope.queue_id, "skipped", recipients=skipped, states=states)

    async def _relay(
        self, envelope: Envelope, body: bytes, domain: str, targets: list[Target], deadline: float, signature: bytes
    ) -> list[RecipientOutcome]:
        """Remote delivery to one domain within the attempt's deadline (POSTROOM_DELIVERY_ATTEMPT_TIMEOUT), so that a
        tarpitting MX cannot hold the message past the broker's consumer_timeout; cut there, its recipients are
        deferred (4.4.7), while the other domains keep their outcomes."""
        scope = asyncio.timeout_at(deadline)
        try:
            async with scope:
                return await self.remote(envelope, body, domain, targets, signature)
        except Exception as exc:
            if not (isinstance(exc, TimeoutError) and scope.expired()):
                return self._internal_error(envelope, targets, exc)
        metrics.ATTEMPT_TIMEOUTS.inc()
        timeout = self.settings.delivery_attempt_timeout
        text = f"delivery attempt timed out after {timeout:g}s (POSTROOM_DELIVERY_ATTEMPT_TIMEOUT)"
        log.warning("delivery attempt timed out", queue_id=envelope.queue_id, domain=domain, timeout=timeout)
        cut = [outcome.temporary(t.address, "4.4.7", text, TRANSPORT_SMTP) for t in targets]
        return [replace(found, original=t.original) for found, t in zip(cut, targets, strict=True)]

    def _internal_error(self, envelope: Envelope, targets: Sequence[Target], exc: Exception) -> list[RecipientOutcome]:
        """Deferred (4.3.0) for an exception nobody foresaw in delivering to `targets`, logged with its traceback."""
        metrics.INTERNAL_ERRORS.inc()
        log.error("delivery failed unexpectedly; deferred", queue_id=envelope.queue_id, exc_info=exc)
        text = f"internal error ({type(exc).__name__})"
        return [
            replace(
                outcome.temporary(t.address, "4.3.0", text, "local" if t.local else TRANSPORT_SMTP), original=t.original
            )
            for t in targets
        ]

    def _account(self, envelope: Envelope, outcomes: list[RecipientOutcome]) -> None:
        age = max(0.0, time.time() - envelope.first_seen)
        events: list[tuple[str, dict[str, Any]]] = []
        for found in outcomes:
            metrics.attempts(found.transport, _RESULT[found.status], found.status_class).inc()
            if found.status is Status.DELIVERED:
                metrics.DELIVERED_DELAY.observe(age)
            events.append(
                (
                    "attempt",
                    {
                        "recipient": found.recipient,
                        "transport": found.transport,
                        "host": found.remote_mta,
                        "reply": f"{found.enhanced} {found.diagnostic}",
                    },
                )
            )
            if found.status is Status.DELIVERED:
                event = "stored" if found.transport == "local" else "relayed"
                events.append((event, {"recipient": found.recipient, "host": found.remote_mta}))
            log.info(
                "attempt",
                queue_id=envelope.queue_id,
                recipient=found.recipient,
                transport=found.transport,
                status=found.status.value,
                enhanced=found.enhanced,
                diagnostic=found.diagnostic,
                host=found.remote_mta,
            )
        # Posted, not awaited: the ack does not wait for the trace, and busy workers share one write (Trace.post).
        self.store.trace.post(envelope.queue_id, SERVICE, events)

    async def _defer(self, envelope: Envelope, body: bytes, deferred: list[RecipientOutcome]) -> Envelope:
        """Publish the retry copy carrying `deferred` (confirmed by the broker) and return its envelope."""
        recipients = tuple(o.recipient for o in deferred)
        following = envelope.retry(recipients, {o.recipient: o.carried() for o in deferred})
        delay = retry.delay_for(self.settings.retry_schedule, following.attempt)
        try:
            await self.publisher.defer(body, following, delay)
        except Exception as exc:
            raise DeferFailed(f"{type(exc).__name__}: {exc}") from exc
        self._trace(envelope.queue_id, "deferred", recipients=list(recipients), delay=delay, attempt=following.attempt)
        log.info(
            "deferred", queue_id=envelope.queue_id, recipients=len(recipients), delay=delay, attempt=following.attempt
        )
        return following

    def _delay_notice_due(self, envelope: Envelope, now: float) -> bool:
        """True on the attempt during which the message's age crosses POSTROOM_DELAY_WARNING_TIME, so the sender
        hears once, without state carried in the envelope (the previous attempt was at least one delay ago)."""
        warn = self.settings.delay_warning_time
        if warn is None or not envelope.mail_from:
            return False
        age = now - envelope.first_seen
        previous = age - retry.delay_for(self.settings.retry_schedule, envelope.attempt) if envelope.attempt else -1.0
        return previous < warn <= age

    async def _notify_delay(
        self, envelope: Envelope, body: bytes, deferred: list[RecipientOutcome], now: float
    ) -> None:
        """Best effort: the recipients are deferred already (durable); a notice the broker refuses is logged, and
        the message goes on as if it had been sent, rather than repeat the deferral. Only for recipients whose
        NOTIFY asks for delays (or gave none)."""
        deferred = wanting(envelope, deferred, DELAY)
        if deferred and await self._notify(envelope, body, deferred, now, "delayed"):
            metrics.DELAY_NOTICES.inc()

    async def _notify_success(
        self, envelope: Envelope, body: bytes, delivered: list[RecipientOutcome], now: float
    ) -> None:
        """RFC 3461 NOTIFY=SUCCESS: `delivered` into a mailbox here, or `relayed` to a next hop without DSN (one
        that has DSN was given NOTIFY and reports itself). Sent after the recipients' progress is recorded, so at
        most once: a crash before the broker confirms it loses the notice, never the message."""
        for action, transport in (("delivered", "local"), ("relayed", TRANSPORT_SMTP)):
            outcomes = [o for o in delivered if o.transport == transport]
            if outcomes and await self._notify(envelope, body, outcomes, now, action):
                metrics.SUCCESS_NOTICES.labels(action).inc()

    async def _notify(
        self, envelope: Envelope, body: bytes, outcomes: list[RecipientOutcome], now: float, action: str
    ) -> bool:
        """Publish a notice of `action` about `outcomes`, best effort; True when the broker confirmed it."""
        notice, notice_envelope = bounce.compose(envelope, body, outcomes, self.settings.hostname, now, action)
        try:
            await self.publisher.enqueue(notice, notice_envelope)
        except Exception as exc:
            log.error(
                "notice not sent", queue_id=envelope.queue_id, action=action, error=f"{type(exc).__name__}: {exc}"
            )
            return False
        recipients = [o.recipient for o in outcomes]
        self._trace(
            envelope.queue_id, "notified", action=action, recipients=recipients, report=notice_envelope.queue_id
        )
        log.info("notice sent", queue_id=envelope.queue_id, action=action, report=notice_envelope.queue_id)
        return True

    async def _bounce(self, envelope: Envelope, body: bytes, failed: list[RecipientOutcome], now: float) -> None:
        for _ in failed:
            metrics.BOUNCED_DELAY.observe(max(0.0, now - envelope.first_seen))
        recipients = [o.recipient for o in failed]
        if not envelope.mail_from:
            # RFC 5321 §4.5.5 / RFC 3464: never answer a null-sender message with another one (no bounce loops).
            metrics.BOUNCES_SUPPRESSED.inc()
            self._trace(envelope.queue_id, "bounced", recipients=recipients, report=None)
            log.warning(
                "failed null-sender message; no bounce sent", queue_id=envelope.queue_id, recipients=len(recipients)
            )
            return
        failed = wanting(envelope, failed, FAILURE)
        if not failed:
            # RFC 3461 §4.1: NOTIFY without FAILURE (NEVER, or SUCCESS/DELAY only): the sender asked for silence.
            self._trace(envelope.queue_id, "bounced", recipients=recipients, report=None, reason="NOTIFY")
            log.info("failed; no bounce asked for (NOTIFY)", queue_id=envelope.queue_id, recipients=len(recipients))
            return
        report, report_envelope = bounce.compose(envelope, body, failed, self.settings.hostname, now)
        await self.publisher.enqueue(report, report_envelope)
        metrics.BOUNCES.inc()
        self._trace(envelope.queue_id, "bounced", recipients=recipients, report=report_envelope.queue_id)
        log.info("bounced", queue_id=envelope.queue_id, recipients=len(recipients), report=report_envelope.queue_id)

    def _trace(self, queue_id: str, event: str, **fields: Any) -> None:
        self.store.trace.post(queue_id, SERVICE, [(event, fields)])


class DeferFailed(Exception):
    """The broker did not confirm a retry copy: the recipients it would carry are not durable anywhere."""


def _resumed(message: Incoming) -> bool:
    """True when this queue message may have been worked on before: redelivered by the broker (a lost ack, a
    closed channel, a nack), or a dead letter put back by `postroom queue dead requeue` (which marks its copy)."""
    headers = message.headers or {}
    return bool(message.redelivered) or _delivery_count(message) > 0 or bool(headers.get(REQUEUED))


def _targets(envelope: Envelope) -> list[Target]:
    """The envelope recipients as targets, for an outcome decided before routing."""
    return [Target(r, r, local=False) for r in envelope.recipients]


def _durable_state(found: RecipientOutcome) -> str:
    if found.transport == TRANSPORT_SMTP:
        return progress.RELAYED
    return progress.DUPLICATE if found.diagnostic == StoreOutcome.DUPLICATE.value else progress.STORED


def _restore_originals(outcomes: list[RecipientOutcome], envelope: Envelope) -> list[RecipientOutcome]:
    """A retry carries expanded addresses; give each outcome back the envelope recipient it first came from,
    so the final report's Original-Recipient still names the alias the sender used."""
    carried = dict(envelope.last_errors)
    restored = []
    for found in outcomes:
        original = RecipientOutcome.carried_original(carried[found.recipient]) if found.recipient in carried else ""
        restored.append(replace(found, original=original) if original else found)
    return restored


async def _settle(settling: Awaitable[Any], envelope: Envelope) -> bool:
    """Ack or nack; if the channel is gone the broker redelivers, and the dedup keys and the progress record make
    that harmless (ledger.py).
    True when the frame was written."""
    try:
        await settling
    except Exception as exc:
        log.warning("ack/nack failed; the message will be redelivered", queue_id=envelope.queue_id, error=str(exc))
        return False
    return True


def _delivery_count(message: Incoming) -> int:
    """How often the quorum queue handed this message out before (its `x-delivery-count` header)."""
    value = (message.headers or {}).get("x-delivery-count")
    return value if isinstance(value, int) else 0


def _give_up(deferred: RecipientOutcome, envelope: Envelope) -> RecipientOutcome:
    """A temporary failure past the queue lifetime becomes permanent (same detail, class 5)."""
    enhanced = "5" + deferred.enhanced[1:]
    age_hours = (time.time() - envelope.first_seen) / 3600
    text = f"{deferred.diagnostic} (gave up after {envelope.attempt + 1} attempts in {age_hours:.1f}h)"
    return replace(deferred, status=Status.PERMANENT, enhanced=enhanced, diagnostic=text)
