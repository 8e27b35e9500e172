"""The consumer's side of the queue index, with a recording publisher and fake AMQP messages on real Redis."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from services.delivery import outcome
from services.store import Store
from services.store import queue_index as states
from shared.envelope import REQUEUED, Envelope
from shared.queue_id import new_queue_id
from tests.delivery.conftest import make_message
from tests.delivery.test_consumer import FakeMessage, FakeRemote, Recorder, make_consumer, run, users

__all__ = ["users"]  # the fixture, used by name


def refusing() -> FakeRemote:
    return FakeRemote(lambda r: outcome.temporary(r, "4.3.0", "not now", "smtp"))


async def test_a_deferral_creates_the_entry_with_its_progress(users: Store) -> None:
    recorder = Recorder()
    consumer = make_consumer(users, recorder, refusing())
    envelope = Envelope(new_queue_id(), "sender@origin.test", ("a@remote.test", "b@remote.test"))
    await run(consumer, recorder, envelope)
    entry = await users.queue.get(envelope.queue_id)
    assert entry is not None and entry.state == states.DEFERRED
    assert entry.recipients == ["a@remote.test", "b@remote.test"] and entry.attempts == 1
    assert entry.last_error == "4.3.0 not now" and entry.sender == "sender@origin.test"
    assert entry.next_attempt is not None and entry.arrival == envelope.first_seen
    assert await users.progress.read(envelope.queue_id) == dict.fromkeys(envelope.recipients, "deferred:1")
    assert [e.queue_id for e in await users.queue.entries()] == [envelope.queue_id]

    # The retry copy comes back and succeeds: the entry goes.
    [(following, _)] = recorder.of("defer")
    consumer.remote = FakeRemote(lambda r: outcome.delivered(r, "250 ok", "smtp"))
    await run(consumer, recorder, following)
    assert await users.queue.get(envelope.queue_id) is None
    assert await users.queue.entries() == []


async def test_a_fresh_message_finished_at_once_has_no_entry(users: Store) -> None:
    recorder = Recorder()
    consumer = make_consumer(users, recorder, FakeRemote(None))
    envelope = Envelope(new_queue_id(), "sender@origin.test", ("alice@example.test",))
    await run(consumer, recorder, envelope)
    assert not await users.redis.exists(users.keys.queue_entry(envelope.queue_id), users.keys.queue_ids)


async def test_a_held_copy_is_parked_once_even_in_two_copies(users: Store) -> None:
    """Two copies of a held message (the original redelivered after a crash between the park's publish and its
    record): the first is parked as the next attempt, the second finds its recipient carried by it and ends."""
    recorder = Recorder()
    consumer = make_consumer(users, recorder, refusing())
    envelope = Envelope(new_queue_id(), "sender@origin.test", ("c@remote.test",))
    await run(consumer, recorder, envelope)
    [(copy, _)] = recorder.of("defer")
    assert await users.queue.set_state(envelope.queue_id, states.HELD, (states.DEFERRED,)) == 1
    recorder.log.clear()
    consumer.remote = FakeRemote(lambda r: outcome.delivered(r, "250 ok", "smtp"))
    await run(consumer, recorder, copy)
    await run(consumer, recorder, copy)
    assert consumer.remote.calls == []  # never attempted while held
    [(parked, delay)] = recorder.of("defer")
    assert delay == 2 and parked.attempt == copy.attempt + 1
    assert [name for name, _ in recorder.log] == ["defer", "ack", "ack"]
    entry = await users.queue.get(envelope.queue_id)
    assert entry is not None and entry.state == states.HELD and entry.attempts == parked.attempt


async def test_the_last_delivery_before_the_dead_queue_marks_it_dead(users: Store) -> None:
    recorder = Recorder(fail=True)  # the broker refuses the retry: the message is handed back
    consumer = make_consumer(users, recorder, refusing())
    envelope = Envelope(new_queue_id(), "sender@origin.test", ("d@remote.test",))
    message = FakeMessage(recorder, envelope, make_message())
    message.headers = {**envelope.to_headers(), "x-delivery-count": 10}
    await consumer.handle(message)
    assert recorder.log == [("nack", True)]
    [entry] = await users.queue.entries(states.Filter(states=(states.DEAD,)))
    assert entry.queue_id == envelope.queue_id and entry.recipients == ["d@remote.test"]

    # `postroom queue dead requeue` puts it back: active while delivered, gone once finished.
    recorder.fail = False
    recorder.log.clear()
    consumer.remote = FakeRemote(lambda r: outcome.delivered(r, "250 ok", "smtp"))
    requeued = FakeMessage(recorder, envelope, make_message())
    requeued.headers = {**envelope.to_headers(), REQUEUED: True}
    await consumer.handle(requeued)
    assert recorder.log == [("ack", None)]
    assert await users.queue.get(envelope.queue_id) is None


async def test_a_deleted_message_is_never_attempted_and_bounced_on_request(users: Store) -> None:
    recorder = Recorder()
    consumer = make_consumer(users, recorder, refusing())
    kept_quiet = Envelope(new_queue_id(), "sender@origin.test", ("e@remote.test",))
    bounced = Envelope(new_queue_id(), "sender@origin.test", ("f@remote.test",))
    for envelope in (kept_quiet, bounced):
        await run(consumer, recorder, envelope)
    copies = {e.queue_id: e for e, _ in recorder.of("defer")}
    assert await users.queue.delete(kept_quiet.queue_id, bounce=False)
    assert await users.queue.delete(bounced.queue_id, bounce=True)
    assert [e.queue_id for e in await users.queue.entries()] == [bounced.queue_id]
    recorder.log.clear()
    consumer.remote = FakeRemote(lambda r: outcome.delivered(r, "250 ok", "smtp"))
    for queue_id in (kept_quiet.queue_id, bounced.queue_id):
        await run(consumer, recorder, copies[queue_id])
    assert consumer.remote.calls == []
    [(report, body)] = recorder.of("enqueue")
    assert report.recipients == ("sender@origin.test",) and b"deleted from the queue by the postmaster" in body
    assert await users.queue.entries() == []
    assert (await users.progress.read(bounced.queue_id))["f@remote.test"] == "deleted"


async def test_an_older_write_never_moves_the_entry_backwards(users: Store) -> None:
    queue_id = new_queue_id()
    fields: dict[str, str | int | float] = {"sender": "s@x.test", "recipients": '["r@x.test"]', "arrival": 1.0}
    await users.queue.record(queue_id, {}, False, "defer", {**fields, "attempts": 3, "last_error": "late"})
    await users.queue.record(queue_id, {}, False, "defer", {**fields, "attempts": 2, "last_error": "early"})
    entry = await users.queue.get(queue_id)
    assert entry is not None and (entry.attempts, entry.last_error) == (3, "late")


async def test_a_listing_member_without_an_entry_is_cleaned(users: Store) -> None:
    queue_id = new_queue_id()
    await users.redis.zadd(users.keys.queue_ids, {queue_id: 1.0})  # a crash between the two writes
    assert await users.queue.entries() == []
    assert await users.redis.zcard(users.keys.queue_ids) == 0


def test_overdue_only_when_waiting_long_past_its_next_attempt() -> None:
    entry = states.QueueEntry("Q", states.DEFERRED, 0.0, "", [], 1, "", 100.0, 0)
    assert not entry.overdue(100.0 + states.OVERDUE_AFTER)
    assert entry.overdue(101.0 + states.OVERDUE_AFTER)
    assert not replace(entry, state=states.ACTIVE).overdue(10**9)  # never claimed: no time to judge by
    active = replace(entry, state=states.ACTIVE, updated=100.0)
    assert not active.overdue(100.0 + states.ACTIVE_OVERDUE_AFTER)
    assert active.overdue(101.0 + states.ACTIVE_OVERDUE_AFTER)


async def test_a_flush_that_finds_no_copy_of_an_overdue_entry_removes_it(users: Store) -> None:
    """An entry whose message is gone (its delay queue purged or lost) is long past its next attempt: a flush that
    finds no copy of it removes it; one not yet overdue stays."""
    from services.store.queue_admin import QueueAdmin
    from services.store.queue_ops import QueueOps
    from tests.helpers import AMQP_URL

    gone, waiting = new_queue_id(), new_queue_id()
    fields: dict[str, str | int | float] = {
        "sender": "s@x.test",
        "recipients": '["r@x.test"]',
        "arrival": 1.0,
        "attempts": 1,
    }
    await users.queue.record(gone, {}, False, "defer", {**fields, "next_attempt": 1000.0})
    await users.queue.record(waiting, {}, False, "defer", {**fields, "next_attempt": 2e9})
    ops = QueueOps(AMQP_URL, users.keys.namespace, [60])
    try:
        report = await QueueAdmin(users, ops, "test").flush(everything=True)
    finally:
        await ops.close()
    assert (report.flushed, report.gone, report.not_waiting) == ([], [gone], [waiting])
    assert [e.queue_id for e in await users.queue.entries()] == [waiting]
    assert "forgotten" in [e["event"] for e in await users.trace.events(gone)]


async def test_a_first_attempt_that_relays_is_listed_active_while_it_runs(users: Store) -> None:
    seen: list[str] = []
    recorder = Recorder()
    envelope = Envelope(new_queue_id(), "sender@origin.test", ("g@remote.test", "alice@example.test"))

    def answer(recipient: str) -> outcome.RecipientOutcome:
        return outcome.delivered(recipient, "250 ok", "smtp")

    class Watching(FakeRemote):
        async def __call__(self, *args: Any) -> list[outcome.RecipientOutcome]:
            entry = await users.queue.get(envelope.queue_id)
            seen.append(entry.state if entry else "")
            return await super().__call__(*args)

    consumer = make_consumer(users, recorder, Watching(answer))
    await run(consumer, recorder, envelope)
    assert seen == [states.ACTIVE]
    assert await users.queue.get(envelope.queue_id) is None and await users.queue.entries() == []
    assert [name for name, _ in recorder.log] == ["ack"]
