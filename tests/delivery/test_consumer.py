"""The consumer's decisions (ack, defer, bounce, dead-letter) with a recording publisher and fake AMQP messages, and
its count of Received fields."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import pytest

from services.delivery import outcome
from services.delivery.config import DeliverySettings
from services.delivery.consumer import Consumer, count_received
from services.delivery.outcome import RecipientOutcome
from services.delivery.routing import Target
from services.store import Store
from shared.envelope import REQUEUED, Envelope
from shared.queue_id import is_queue_id, new_queue_id
from shared.settings import load_settings
from tests.delivery.conftest import dsn_fields, mailbox, make_message, report_parts, text_of
from tests.helpers import free_port, wait_until


class Recorder:
    """Stands in for the publisher and the AMQP message; keeps one ordered log of what happened."""

    def __init__(self, fail: bool = False) -> None:
        self.log: list[tuple[str, Any]] = []
        self.fail = fail

    async def defer(self, body: bytes, envelope: Envelope, delay: int) -> None:
        if self.fail:
            raise ConnectionError("broker gone")
        self.log.append(("defer", (envelope, delay)))

    async def enqueue(self, body: bytes, envelope: Envelope) -> None:
        if self.fail:
            raise ConnectionError("broker gone")
        self.log.append(("enqueue", (envelope, body)))

    def of(self, kind: str) -> list[Any]:
        return [item for name, item in self.log if name == kind]


class FakeMessage:
    def __init__(self, recorder: Recorder, envelope: Envelope | None, body: bytes, headers: Any = None) -> None:
        self.headers = envelope.to_headers() if envelope else headers
        self.body = body
        self.redelivered = False
        self.message_id = envelope.queue_id if envelope else None
        self.recorder = recorder
        self.delivery_tag: int | None = None  # untracked: settled on its own
        self.channel: Any = None

    async def ack(self) -> None:
        self.recorder.log.append(("ack", None))

    async def nack(self, requeue: bool = True) -> None:
        self.recorder.log.append(("nack", requeue))

    async def reject(self, requeue: bool = False) -> None:
        self.recorder.log.append(("reject", requeue))


class FakeRemote:
    def __init__(self, answer: Any) -> None:
        self.answer = answer
        self.calls: list[list[str]] = []

    async def __call__(
        self, envelope: Envelope, body: bytes, domain: str, targets: Sequence[Target], signature: bytes = b""
    ) -> list[RecipientOutcome]:
        self.calls.append([t.address for t in targets])
        return [replace(self.answer(t.address), original=t.original) for t in targets]


def make_consumer(store: Store, recorder: Recorder, remote: Any, **overrides: Any) -> Consumer:
    settings = load_settings(
        DeliverySettings,
        namespace=store.keys.namespace,
        retry_schedule="1s,2s",
        hostname="mx.postroom.test",
        **overrides,
    )
    return Consumer(settings, store, None, recorder, remote)  # type: ignore[arg-type]


async def run(consumer: Consumer, recorder: Recorder, envelope: Envelope, body: bytes | None = None) -> None:
    await consumer.handle(FakeMessage(recorder, envelope, body or make_message()))


@pytest.fixture
async def users(store: Store) -> Store:
    for domain in ("example.test", "origin.test"):
        await store.accounts.add_domain(domain)
    await store.accounts.add_user("alice@example.test", "pw")
    await store.accounts.add_user("sender@origin.test", "pw")
    return store


async def test_only_failed_recipients_travel_on_and_publish_precedes_ack(users: Store) -> None:
    recorder = Recorder()
    remote = FakeRemote(lambda r: outcome.temporary(r, "4.2.1", "450 busy", "smtp", "mx.remote.test"))
    consumer = make_consumer(users, recorder, remote)
    envelope = Envelope(
        new_queue_id(), "sender@origin.test", ("alice@example.test", "bob@remote.test"), first_seen=time.time() - 5
    )
    await run(consumer, recorder, envelope)
    assert [name for name, _ in recorder.log] == ["defer", "ack"]
    [(following, delay)] = recorder.of("defer")
    assert following.recipients == ("bob@remote.test",)
    assert (following.attempt, following.first_seen, following.queue_id) == (1, envelope.first_seen, envelope.queue_id)
    assert delay == 1
    assert len(await mailbox(users, "alice@example.test")) == 1

    # The next attempt (second step of the schedule), then the last step repeats.
    recorder.log.clear()
    await run(consumer, recorder, following)
    [(third, delay)] = recorder.of("defer")
    assert (third.attempt, delay) == (2, 2)
    assert remote.calls[-1] == ["bob@remote.test"]
    assert "450 busy" in dict(third.last_errors)["bob@remote.test"]


async def test_permanent_failure_bounces_rfc3464_to_the_sender(users: Store) -> None:
    recorder = Recorder()
    remote = FakeRemote(lambda r: outcome.permanent(r, "5.1.1", "550 5.1.1 no such user", "smtp", "mx.remote.test"))
    consumer = make_consumer(users, recorder, remote)
    envelope = Envelope(new_queue_id(), "sender@origin.test", ("bob@remote.test", "alice@example.test"))
    await run(consumer, recorder, envelope, make_message("bounce-me"))
    assert [name for name, _ in recorder.log] == ["enqueue", "ack"]
    [(report_envelope, body)] = recorder.of("enqueue")
    assert report_envelope.mail_from == "" and report_envelope.recipients == ("sender@origin.test",)
    assert is_queue_id(report_envelope.queue_id) and report_envelope.queue_id != envelope.queue_id

    report, parts = report_parts(body)
    assert report.get_content_type() == "multipart/report"
    assert report.get_param("report-type") == "delivery-status"
    assert report["From"] == "Mail Delivery System <MAILER-DAEMON@mx.postroom.test>"
    assert report["To"] == "<sender@origin.test>"
    assert report["Auto-Submitted"] == "auto-replied"
    assert [p.get_content_type() for p in parts] == ["text/plain", "message/delivery-status", "text/rfc822-headers"]
    per_message, *per_recipient = dsn_fields(body)
    assert per_message["Reporting-MTA"] == "dns; mx.postroom.test"
    assert per_message["Arrival-Date"]
    [rcpt] = per_recipient
    assert rcpt["Final-Recipient"] == "rfc822; bob@remote.test"
    assert (rcpt["Action"], rcpt["Status"]) == ("failed", "5.1.1")
    assert rcpt["Remote-MTA"] == "dns; mx.remote.test"
    assert rcpt["Diagnostic-Code"] == "smtp; 550 5.1.1 no such user"
    assert "Subject: bounce-me" in text_of(parts[2])
    assert "Hello there" not in text_of(parts[2])


async def test_redelivered_original_bounces_into_the_same_queue_id(users: Store) -> None:
    recorder = Recorder()
    consumer = make_consumer(users, recorder, FakeRemote(lambda r: outcome.permanent(r, "5.1.1", "550 no")))
    envelope = Envelope(new_queue_id(), "sender@origin.test", ("bob@remote.test",))
    await run(consumer, recorder, envelope)
    await run(consumer, recorder, envelope)
    first, second = recorder.of("enqueue")
    assert first[0].queue_id == second[0].queue_id


async def test_null_sender_is_never_bounced(users: Store) -> None:
    recorder = Recorder()
    consumer = make_consumer(users, recorder, FakeRemote(lambda r: outcome.permanent(r, "5.1.1", "550 no")))
    await run(consumer, recorder, Envelope(new_queue_id(), "", ("bob@remote.test",)))
    assert [name for name, _ in recorder.log] == ["ack"]


async def test_past_queue_lifetime_bounces_instead_of_retrying(users: Store) -> None:
    recorder = Recorder()
    remote = FakeRemote(lambda r: outcome.temporary(r, "4.4.1", "connection refused", "smtp"))
    consumer = make_consumer(users, recorder, remote, max_queue_lifetime="60s")
    envelope = Envelope(
        new_queue_id(), "sender@origin.test", ("bob@remote.test",), first_seen=time.time() - 61, attempt=4
    )
    await run(consumer, recorder, envelope)
    assert [name for name, _ in recorder.log] == ["enqueue", "ack"]
    [rcpt] = dsn_fields(recorder.of("enqueue")[0][1])[1:]
    assert rcpt["Status"] == "5.4.1"
    assert "gave up after 5 attempts" in rcpt["Diagnostic-Code"]


async def test_mail_loop_bounces_5_4_6_without_delivering(users: Store) -> None:
    recorder = Recorder()
    consumer = make_consumer(users, recorder, FakeRemote(None))
    looped = b"".join(b"Received: from hop%d by relay\r\n" % i for i in range(51)) + make_message()
    await run(consumer, recorder, Envelope(new_queue_id(), "sender@origin.test", ("alice@example.test",)), looped)
    [(_, body)] = recorder.of("enqueue")
    assert dsn_fields(body)[1]["Status"] == "5.4.6"
    assert await mailbox(users, "alice@example.test") == []


async def test_fifty_received_headers_are_still_delivered(users: Store) -> None:
    recorder = Recorder()
    consumer = make_consumer(users, recorder, FakeRemote(None))
    body = b"".join(b"Received: from hop%d by relay\r\n" % i for i in range(49)) + make_message()
    await run(consumer, recorder, Envelope(new_queue_id(), "sender@origin.test", ("alice@example.test",)), body)
    assert [name for name, _ in recorder.log] == ["ack"]


async def test_failed_publish_means_no_ack(users: Store) -> None:
    recorder = Recorder(fail=True)
    consumer = make_consumer(users, recorder, FakeRemote(lambda r: outcome.temporary(r, "4.4.1", "down", "smtp")))
    await run(consumer, recorder, Envelope(new_queue_id(), "sender@origin.test", ("bob@remote.test",)))
    assert recorder.log == [("nack", True)]


async def test_foreign_message_is_dead_lettered(users: Store) -> None:
    recorder = Recorder()
    consumer = make_consumer(users, recorder, FakeRemote(None))
    message = FakeMessage(recorder, None, b"junk", headers={"something": "else"})
    await consumer.handle(message)
    assert recorder.log == [("reject", False)]


async def test_mailbox_full_is_deferred_with_4_2_2(users: Store) -> None:
    await users.accounts.add_user("small@example.test", "pw", quota=10)
    recorder = Recorder()
    consumer = make_consumer(users, recorder, FakeRemote(None))
    await run(consumer, recorder, Envelope(new_queue_id(), "sender@origin.test", ("small@example.test",)))
    [(following, _)] = recorder.of("defer")
    assert '"4.2.2"' in dict(following.last_errors)["small@example.test"]


async def test_unknown_local_user_bounces_5_1_1(users: Store) -> None:
    recorder = Recorder()
    consumer = make_consumer(users, recorder, FakeRemote(None))
    await run(consumer, recorder, Envelope(new_queue_id(), "sender@origin.test", ("nobody@example.test",)))
    assert dsn_fields(recorder.of("enqueue")[0][1])[1]["Status"] == "5.1.1"


async def test_redis_down_defers_everything(namespace: str) -> None:
    dead = Store.connect(f"redis://127.0.0.1:{free_port()}/0", namespace)
    recorder = Recorder()
    consumer = make_consumer(dead, recorder, FakeRemote(None))
    await run(consumer, recorder, Envelope(new_queue_id(), "sender@origin.test", ("alice@example.test",)))
    [(following, _)] = recorder.of("defer")
    assert following.recipients == ("alice@example.test",)
    assert recorder.log[-1] == ("ack", None)
    await dead.close()


async def test_delay_notice_once_when_the_warning_time_is_crossed(users: Store) -> None:
    recorder = Recorder()
    remote = FakeRemote(lambda r: outcome.temporary(r, "4.4.1", "connection refused", "smtp"))
    consumer = make_consumer(users, recorder, remote, delay_warning_time="1s")
    crossing = Envelope(
        new_queue_id(), "sender@origin.test", ("bob@remote.test",), first_seen=time.time() - 1.5, attempt=1
    )
    await run(consumer, recorder, crossing)
    assert [name for name, _ in recorder.log] == ["defer", "enqueue", "ack"]
    [(notice_envelope, body)] = recorder.of("enqueue")
    assert notice_envelope.mail_from == ""
    report, _ = report_parts(body)
    assert report["Subject"].startswith("Delayed Mail")
    rcpt = dsn_fields(body)[1]
    assert (rcpt["Action"], rcpt["Status"]) == ("delayed", "4.4.1")

    recorder.log.clear()
    later = Envelope(new_queue_id(), "sender@origin.test", ("bob@remote.test",), first_seen=time.time() - 5, attempt=2)
    await run(consumer, recorder, later)
    assert [name for name, _ in recorder.log] == ["defer", "ack"]


async def test_unexpected_error_defers_instead_of_requeueing(users: Store) -> None:
    """A bug in delivering a recipient never requeues at once (which would repeat the other recipients' work):
    the recipient is deferred as an internal error through the delay queue, the others keep their outcome."""

    def explode(recipient: str) -> RecipientOutcome:
        raise RuntimeError("bug")

    recorder = Recorder()
    consumer = make_consumer(users, recorder, FakeRemote(explode))
    envelope = Envelope(new_queue_id(), "sender@origin.test", ("bob@remote.test", "alice@example.test"))
    await run(consumer, recorder, envelope)
    assert [name for name, _ in recorder.log] == ["defer", "ack"]
    [(following, _)] = recorder.of("defer")
    assert following.recipients == ("bob@remote.test",)
    assert '"enhanced": "4.3.0"' in dict(following.last_errors)["bob@remote.test"]
    assert "internal error (RuntimeError)" in dict(following.last_errors)["bob@remote.test"]
    assert len(await mailbox(users, "alice@example.test")) == 1


async def test_an_exception_after_a_relay_defers_the_rest_and_the_relay_stays_settled(
    users: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The consumer's own step fails after a remote relay (here: composing the bounce): the unsettled recipient is
    deferred, the message acked, and the relay is in the progress record, so no later delivery relays it again."""
    from services.delivery import bounce

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise UnicodeEncodeError("utf-8", "x", 0, 1, "surrogates not allowed")

    monkeypatch.setattr(bounce, "compose", broken)
    recorder = Recorder()
    remote = FakeRemote(
        lambda r: (
            outcome.delivered(r, "250 ok", "smtp", "mx.remote.test")
            if r.startswith("ok")
            else outcome.permanent(r, "5.1.1", "550 no", "smtp", "mx.remote.test")
        )
    )
    consumer = make_consumer(users, recorder, remote)
    envelope = Envelope(new_queue_id(), "sender@origin.test", ("ok@remote.test", "gone@remote.test"))
    await run(consumer, recorder, envelope)
    assert [name for name, _ in recorder.log] == ["defer", "ack"]
    [(following, _)] = recorder.of("defer")
    assert following.recipients == ("gone@remote.test",)
    assert await users.progress.read(envelope.queue_id) == {
        "ok@remote.test": "relayed",
        "gone@remote.test": "deferred:1",
    }

    # Delivered again (a lost ack): nothing is relayed or deferred twice.
    recorder.log.clear()
    message = FakeMessage(recorder, envelope, make_message())
    message.redelivered = True
    await consumer.handle(message)
    assert recorder.log == [("ack", None)]
    assert remote.calls == [["ok@remote.test", "gone@remote.test"]]


async def test_a_refused_defer_requeues_with_the_progress_kept(users: Store) -> None:
    """Only when the defer itself cannot be made durable does the message go back unacked; what was settled is
    recorded first without a TTL (it may come back from the dead-letter queue much later)."""
    recorder = Recorder(fail=True)
    remote = FakeRemote(
        lambda r: (
            outcome.delivered(r, "250 ok", "smtp")
            if r.startswith("ok")
            else outcome.temporary(r, "4.4.1", "down", "smtp")
        )
    )
    consumer = make_consumer(users, recorder, remote)
    envelope = Envelope(new_queue_id(), "sender@origin.test", ("ok@remote.test", "busy@remote.test"))
    message = FakeMessage(recorder, envelope, make_message())
    message.headers = {**envelope.to_headers(), "x-delivery-count": 10}
    await consumer.handle(message)
    assert recorder.log == [("nack", True)]
    assert await users.progress.read(envelope.queue_id) == {"ok@remote.test": "relayed"}
    assert await users.redis.ttl(users.keys.progress(envelope.queue_id)) == -1  # no TTL: kept

    async def traced() -> bool:  # the trace is posted, not awaited before the nack
        return "dead-lettered" in [e["event"] for e in await users.trace.events(envelope.queue_id)]

    await wait_until(traced, what="dead-lettered traced")

    # The redelivery (the broker took the defer again): the relayed recipient is left alone, the record finished.
    recorder.fail = False
    recorder.log.clear()
    message = FakeMessage(recorder, envelope, make_message())
    message.redelivered = True
    await consumer.handle(message)
    assert [name for name, _ in recorder.log] == ["defer", "ack"]
    assert remote.calls[-1] == ["busy@remote.test"]
    assert 0 < await users.redis.ttl(users.keys.progress(envelope.queue_id)) <= users.progress.ttl


async def test_a_dead_letter_requeued_any_time_later_repeats_nothing(users: Store) -> None:
    """At its last delivery before the dead queue (x-delivery-count at the limit) the record is kept without a TTL
    even though the delivery finished: if that ack is lost the message sits dead for any time. Requeued weeks later
    (dedup key expired, the user's copy downloaded and deleted), it relays nothing and stores nothing again."""
    recorder = Recorder()
    remote = FakeRemote(lambda r: outcome.delivered(r, "250 ok", "smtp", "mx.remote.test"))
    consumer = make_consumer(users, recorder, remote)
    envelope = Envelope(new_queue_id(), "sender@origin.test", ("alice@example.test", "bob@remote.test"))
    last = FakeMessage(recorder, envelope, make_message())
    last.headers = {**envelope.to_headers(), "x-delivery-count": 10}
    last.redelivered = True
    await consumer.handle(last)
    assert recorder.log == [("ack", None)]
    key = users.keys.progress(envelope.queue_id)
    assert await users.redis.ttl(key) == -1
    assert await users.progress.read(envelope.queue_id) == {
        "alice@example.test": "stored",
        "bob@remote.test": "relayed",
    }

    box = users.keys.mailbox("alice@example.test")
    await users.redis.delete(box.dedup(envelope.queue_id))  # 8 days later
    token = await users.mailboxes.acquire_lock("alice@example.test", 30)
    assert token is not None
    assert await users.mailboxes.delete("alice@example.test", token, [envelope.queue_id]) == 1  # POP3 DELE, QUIT

    recorder.log.clear()
    requeued = FakeMessage(recorder, envelope, make_message())
    requeued.headers = {**envelope.to_headers(), REQUEUED: True}  # as `postroom queue dead requeue` puts it back
    await consumer.handle(requeued)
    assert recorder.log == [("ack", None)]
    assert remote.calls == [["bob@remote.test"]]
    assert await mailbox(users, "alice@example.test") == []
    user = await users.accounts.get_user("alice@example.test")
    assert user is not None and (user.messages, user.bytes) == (0, 0)
    assert 0 < await users.redis.ttl(key) <= users.progress.ttl  # finished now


async def test_a_fresh_local_delivery_reads_and_writes_no_progress(users: Store) -> None:
    """The hot path: a first delivery whose recipients are all stored costs no progress round trip."""
    recorder = Recorder()
    consumer = make_consumer(users, recorder, FakeRemote(None))
    calls: list[str] = []
    progress = users.progress

    async def read(queue_id: str) -> dict[str, str]:
        calls.append("read")
        return {}

    async def record(*args: Any, **kwargs: Any) -> None:
        calls.append("record")

    progress.read = read  # type: ignore[method-assign]
    progress.record = record  # type: ignore[method-assign]
    await run(consumer, recorder, Envelope(new_queue_id(), "sender@origin.test", ("alice@example.test",)))
    assert [name for name, _ in recorder.log] == ["ack"]
    assert calls == []


async def test_original_recipient_survives_retries(users: Store) -> None:
    await users.accounts.add_alias("list@example.test", ["bob@remote.test"])
    recorder = Recorder()
    remote = FakeRemote(lambda r: outcome.temporary(r, "4.4.1", "refused", "smtp"))
    consumer = make_consumer(users, recorder, remote, max_queue_lifetime="60s")
    envelope = Envelope(new_queue_id(), "sender@origin.test", ("list@example.test",), first_seen=time.time() - 30)
    await run(consumer, recorder, envelope)
    [(following, _)] = recorder.of("defer")
    assert following.recipients == ("bob@remote.test",)
    expired = replace(following, first_seen=time.time() - 61)
    await run(consumer, recorder, expired)
    [rcpt] = dsn_fields(recorder.of("enqueue")[0][1])[1:]
    assert rcpt["Original-Recipient"] == "rfc822; list@example.test"
    assert rcpt["Final-Recipient"] == "rfc822; bob@remote.test"


async def test_hanging_redis_defers_after_the_timeout(namespace: str) -> None:
    """A Redis that accepts connections and never answers: the call times out and the recipient is deferred."""
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    hanging = Store.connect(f"redis://127.0.0.1:{port}/0", namespace, socket_timeout=0.5, socket_connect_timeout=0.5)
    recorder = Recorder()
    consumer = make_consumer(hanging, recorder, FakeRemote(None))
    try:
        await run(consumer, recorder, Envelope(new_queue_id(), "sender@origin.test", ("alice@example.test",)))
        [(following, _)] = recorder.of("defer")
        assert following.recipients == ("alice@example.test",)
        assert recorder.log[-1] == ("ack", None)
    finally:
        server.close()
        await hanging.close()


async def test_a_nack_that_failed_is_never_covered_by_a_batched_ack(users: Store) -> None:
    from tests.delivery.test_acks import FakeChannel, next_iteration

    recorder = Recorder()
    consumer = make_consumer(users, recorder, FakeRemote(lambda r: outcome.temporary(r, "4.4.1", "down")))
    channel = FakeChannel()
    failing = FakeMessage(recorder, Envelope(new_queue_id(), "sender@origin.test", ("bob@remote.test",)), b"x")
    stored = FakeMessage(recorder, Envelope(new_queue_id(), "sender@origin.test", ("alice@example.test",)), b"y")

    async def lost_nack(requeue: bool = True) -> None:
        raise ConnectionError("broker gone")

    failing.nack = lost_nack  # type: ignore[method-assign]
    window = consumer._acks.track(channel, 1)
    consumer._acks.track(channel, 2)
    for tag, message in ((1, failing), (2, stored)):
        message.delivery_tag, message.channel = tag, channel
        recorder.fail = message is failing  # the broker refuses the defer: the message goes back unacked
        await consumer.handle(message, window)
    await next_iteration()
    assert channel.sent() == []  # 2 waits behind 1, whose nack never went out: no multiple ack may cover 1
    assert consumer._acks.pending() == 1


async def test_a_redelivery_in_hand_waits_for_the_earlier_delivery_of_the_same_message(users: Store) -> None:
    """One queue message at a time per process: the redelivery starts only once the earlier delivery (still relaying
    after its channel closed) has ended, then finds the relay recorded. A waiter cancelled meanwhile (shutdown)
    disturbs neither the earlier delivery nor a later waiter."""
    gate = asyncio.Event()

    class Gated(FakeRemote):
        async def __call__(
            self, envelope: Envelope, body: bytes, domain: str, targets: Sequence[Target], signature: bytes = b""
        ) -> list[RecipientOutcome]:
            found = await super().__call__(envelope, body, domain, targets, signature)
            await gate.wait()
            return found

    recorder = Recorder()
    remote = Gated(lambda r: outcome.delivered(r, "250 ok", "smtp", "mx.remote.test"))
    consumer = make_consumer(users, recorder, remote)
    envelope = Envelope(new_queue_id(), "sender@origin.test", ("bob@remote.test",))
    messages = [FakeMessage(recorder, envelope, make_message()) for _ in range(3)]
    for message in messages[1:]:
        message.redelivered = True
    tasks = [asyncio.create_task(consumer._on_message(m)) for m in messages]

    async def relaying() -> bool:
        return remote.calls == [["bob@remote.test"]]

    await wait_until(relaying, what="the first delivery relaying")
    tasks[1].cancel()
    gate.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert tasks[1].cancelled() and not tasks[0].cancelled() and not tasks[2].cancelled()
    assert remote.calls == [["bob@remote.test"]]  # the third found it recorded
    assert recorder.log == [("ack", None), ("ack", None)]
    assert consumer._working == {}


def test_count_received_only_in_the_header_section() -> None:
    message = b"Received: a\r\nreceived: b\r\nSubject: x\r\n\r\nReceived: not a header\r\n"
    assert count_received(message) == 2
