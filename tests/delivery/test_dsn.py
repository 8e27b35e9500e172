"""DSN (RFC 3461) honoured by the consumer: success notices, NOTIFY for failures and delays, RET, the report's
Original-Envelope-Id and Original-Recipient, and no second success notice on a redelivery."""

from __future__ import annotations

import time
from collections.abc import Callable
from email.message import Message
from typing import Any

import pytest

from services.delivery import outcome
from services.store import Store
from shared.envelope import Envelope
from shared.queue_id import new_queue_id
from tests.delivery.conftest import TEST_SCHEDULE, Broker, dsn_fields, mailbox, make_message, report_parts
from tests.delivery.test_consumer import FakeMessage, FakeRemote, Recorder, make_consumer, run, users
from tests.helpers import ServiceProcess, wait_until, wait_until_sync

__all__ = ["users"]  # the fixture, used by name

SENDER = "sender@origin.test"


def envelope_with(recipients: tuple[str, ...], *notify: tuple[str, str, str], **fields: object) -> Envelope:
    return Envelope(new_queue_id(), SENDER, recipients, dsn_recipients=notify, **fields)  # type: ignore[arg-type]


def relayed(dsn_passed: bool) -> FakeRemote:
    return FakeRemote(
        lambda r: (
            outcome.RecipientOutcome(r, outcome.Status.DELIVERED, "2.0.0", "250 2.0.0 Ok", "smtp", "mx.remote.test")
            if not dsn_passed
            else outcome.RecipientOutcome(
                r, outcome.Status.DELIVERED, "2.0.0", "250 2.0.0 Ok", "smtp", "mx.remote.test", "", True
            )
        )
    )


def notices(recorder: Recorder) -> list[tuple[Envelope, bytes]]:
    return list(recorder.of("enqueue"))


async def test_success_notice_on_local_delivery_with_envid_and_orcpt(users: Store) -> None:
    recorder = Recorder()
    consumer = make_consumer(users, recorder, relayed(False))
    envelope = envelope_with(
        ("alice@example.test",),
        ("alice@example.test", "SUCCESS", "rfc822;Alice@Example.test"),
        dsn_envid="QQ314159",
    )
    await run(consumer, recorder, envelope)
    assert len(await mailbox(users, "alice@example.test")) == 1
    [(notice_envelope, body)] = notices(recorder)
    assert (notice_envelope.mail_from, notice_envelope.recipients) == ("", (SENDER,))
    report, parts = report_parts(body)
    assert report["Subject"] == "Successful Mail Delivery Report"
    assert parts[2].get_content_type() == "text/rfc822-headers"  # never the content in a success notice
    message_fields, rcpt = dsn_fields(body)
    assert message_fields["Original-Envelope-Id"] == "QQ314159"
    assert rcpt["Original-Recipient"] == "rfc822; Alice@Example.test"
    assert (rcpt["Action"], rcpt["Status"], rcpt["Final-Recipient"]) == (
        "delivered",
        "2.0.0",
        "rfc822; alice@example.test",
    )


async def test_a_redelivery_sends_no_second_success_notice(users: Store) -> None:
    """The ack is lost after the notice went out: the redelivery finds the recipient recorded and skips it."""
    recorder = Recorder()
    consumer = make_consumer(users, recorder, relayed(False))
    envelope = envelope_with(
        ("alice@example.test", "bob@remote.test"),
        ("alice@example.test", "SUCCESS", ""),
        ("bob@remote.test", "SUCCESS,FAILURE", ""),
    )
    body = make_message()
    await run(consumer, recorder, envelope, body)
    assert sorted(dsn_fields(b)[1]["Action"] for _, b in notices(recorder)) == ["delivered", "relayed"]
    recorder.log.clear()
    again = FakeMessage(recorder, envelope, body)
    again.redelivered = True
    await consumer.handle(again)
    assert [name for name, _ in recorder.log] == ["ack"]
    assert len(await mailbox(users, "alice@example.test")) == 1


async def test_relay_to_a_dsn_hop_leaves_the_notice_to_it(users: Store) -> None:
    recorder = Recorder()
    consumer = make_consumer(users, recorder, relayed(True))
    await run(consumer, recorder, envelope_with(("bob@remote.test",), ("bob@remote.test", "SUCCESS", "")))
    assert [name for name, _ in recorder.log] == ["ack"]


async def test_without_parameters_nothing_changes(users: Store) -> None:
    recorder = Recorder()
    consumer = make_consumer(users, recorder, relayed(False))
    await run(consumer, recorder, envelope_with(("alice@example.test", "bob@remote.test")))
    assert [name for name, _ in recorder.log] == ["ack"]  # no success notice unless asked for


@pytest.mark.parametrize(
    ("notify", "bounced"),
    [("", True), ("FAILURE", True), ("SUCCESS,FAILURE,DELAY", True), ("NEVER", False), ("SUCCESS,DELAY", False)],
)
async def test_failure_notice_only_where_notify_asks(users: Store, notify: str, bounced: bool) -> None:
    recorder = Recorder()
    consumer = make_consumer(users, recorder, FakeRemote(lambda r: outcome.permanent(r, "5.1.1", "550 no", "smtp")))
    request = (("bob@remote.test", notify, ""),) if notify else ()
    await run(consumer, recorder, envelope_with(("bob@remote.test",), *request))
    assert len(notices(recorder)) == int(bounced)
    assert recorder.log[-1] == ("ack", None)


async def test_notify_travels_with_the_retries_to_the_final_failure(users: Store) -> None:
    """A recipient deferred until the queue lifetime ends: its NOTIFY=NEVER is honoured by the last attempt."""
    recorder = Recorder()
    remote = FakeRemote(lambda r: outcome.temporary(r, "4.4.1", "connection refused", "smtp"))
    consumer = make_consumer(users, recorder, remote, max_queue_lifetime="1h")
    first = envelope_with(("bob@remote.test", "carol@remote.test"), ("bob@remote.test", "NEVER", ""))
    await run(consumer, recorder, first)
    [(following, _delay)] = recorder.of("defer")
    assert following.dsn_recipients == first.dsn_recipients
    recorder.log.clear()
    expired = Envelope.from_headers({**following.to_headers(), "x-postroom-first-seen": repr(time.time() - 7200)})
    await run(consumer, recorder, expired)
    [(_, body)] = notices(recorder)
    assert [group["Final-Recipient"] for group in dsn_fields(body)[1:]] == ["rfc822; carol@remote.test"]


async def test_delay_notice_only_where_notify_asks(users: Store) -> None:
    recorder = Recorder()
    remote = FakeRemote(lambda r: outcome.temporary(r, "4.4.1", "connection refused", "smtp"))
    consumer = make_consumer(users, recorder, remote, delay_warning_time="1s")
    crossing = envelope_with(
        ("bob@remote.test", "carol@remote.test", "dave@remote.test"),
        ("bob@remote.test", "FAILURE", ""),
        ("carol@remote.test", "DELAY", ""),
    )
    crossing = Envelope.from_headers({**crossing.to_headers(), "x-postroom-first-seen": repr(time.time() - 1.5)})
    crossing = Envelope.from_headers({**crossing.to_headers(), "x-postroom-attempt": 1})
    await run(consumer, recorder, crossing)
    [(_, body)] = notices(recorder)
    told = [group["Final-Recipient"] for group in dsn_fields(body)[1:]]
    assert told == ["rfc822; carol@remote.test", "rfc822; dave@remote.test"]  # dave gave no NOTIFY: as before


def returned(body: bytes) -> Message:
    return report_parts(body)[1][2]


@pytest.mark.parametrize(("ret", "full"), [("", False), ("HDRS", False), ("FULL", True)])
async def test_ret_decides_what_a_bounce_returns(users: Store, ret: str, full: bool) -> None:
    recorder = Recorder()
    consumer = make_consumer(users, recorder, FakeRemote(lambda r: outcome.permanent(r, "5.1.1", "550 no", "smtp")))
    message = make_message(body="The body text.\r\n")
    await run(consumer, recorder, envelope_with(("bob@remote.test",), dsn_ret=ret), message)
    [(_, body)] = notices(recorder)
    part = returned(body)
    if full:
        assert part.get_content_type() == "message/rfc822"
        assert b"The body text." in body
    else:
        assert part.get_content_type() == "text/rfc822-headers"
        assert b"The body text." not in body


async def test_success_notice_once_across_a_crash_after_the_store(
    start_service: Callable[..., ServiceProcess], broker: Broker, store: Store, local_users: Any
) -> None:
    """The worker SIGKILLs itself after storing, before any notice or ack; the redelivery stores nothing twice
    and sends the one success notice, which reaches the (local) sender's mailbox once."""
    await local_users("bob@example.test", "carol@example.test")
    crashing = start_service("delivery", POSTROOM_FAULT_CRASH_AFTER_STORE="1", POSTROOM_RETRY_SCHEDULE=TEST_SCHEDULE)
    envelope = await broker.publish(
        ["bob@example.test"],
        make_message("notify me"),
        sender="carol@example.test",
        dsn_recipients=(("bob@example.test", "SUCCESS", ""),),
        dsn_envid="crash-1",
    )
    wait_until_sync(lambda: crashing.proc is not None and crashing.proc.poll() is not None, what="worker killed")
    assert await mailbox(store, "carol@example.test") == []  # killed before the notice
    start_service("delivery", POSTROOM_RETRY_SCHEDULE=TEST_SCHEDULE)

    async def notified() -> bool:
        return len(await mailbox(store, "carol@example.test")) == 1

    async def drained() -> bool:
        events = await store.trace.events(envelope.queue_id)
        return await broker.depth(broker.topology.incoming) == 0 and any(e["event"] == "notified" for e in events)

    await wait_until(notified, what="success notice in carol's mailbox")
    await wait_until(drained, what="incoming drained")
    [notice] = await mailbox(store, "carol@example.test")
    assert b"Original-Envelope-Id: crash-1" in notice and b"Action: delivered" in notice
    assert len(await mailbox(store, "bob@example.test")) == 1
