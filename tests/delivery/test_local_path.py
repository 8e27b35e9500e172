"""The minimal path: a queued message is stored in the local mailbox once, even across a crash before the ack."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from services.store import Store
from tests.delivery.conftest import (
    TEST_SCHEDULE,
    Broker,
    as_stored,
    crash_after_store_then_redeliver,
    mailbox,
    make_message,
)
from tests.harness import ServiceProcess
from tests.helpers import http_status, wait_until


async def test_published_message_is_stored(
    start_service: Callable[..., ServiceProcess], broker: Broker, store: Store, local_users: Any
) -> None:
    await local_users("alice@example.test")
    worker = start_service("delivery", POSTROOM_RETRY_SCHEDULE=TEST_SCHEDULE)
    message = make_message("stored")
    envelope = await broker.publish(["Alice@Example.test"], message)

    async def stored() -> bool:
        return any(e["event"] == "stored" for e in await store.trace.events(envelope.queue_id))

    await wait_until(stored, what="message in alice's mailbox")
    assert await mailbox(store, "alice@example.test") == [as_stored(message)]
    events = [e["event"] for e in await store.trace.events(envelope.queue_id)]
    assert events[:2] == ["attempt", "stored"]
    assert http_status(f"{worker.metrics_url}/readyz") == 200


async def test_crash_after_store_before_ack_stores_exactly_once(
    start_service: Callable[..., ServiceProcess], broker: Broker, store: Store, local_users: Any
) -> None:
    await local_users("bob@example.test")
    after_kill = await crash_after_store_then_redeliver(
        start_service, broker, store, "bob@example.test", make_message("crash")
    )
    assert len(after_kill) == 1
    assert len(await mailbox(store, "bob@example.test")) == 1


async def test_return_path_on_top_of_what_is_stored(
    start_service: Callable[..., ServiceProcess], broker: Broker, store: Store, local_users: Any
) -> None:
    """RFC 5321 §4.4: final delivery records the envelope sender, `<>` for the null sender; counted in the size."""
    await local_users("alice@example.test")
    start_service("delivery", POSTROOM_RETRY_SCHEDULE=TEST_SCHEDULE)
    message = make_message("return path")
    await broker.publish(["alice@example.test"], message, sender="Some.One@remote.test")
    await broker.publish(["alice@example.test"], message, sender="")

    async def both() -> bool:
        return len(await mailbox(store, "alice@example.test")) == 2

    await wait_until(both, what="both stored")
    assert sorted(await mailbox(store, "alice@example.test")) == sorted(
        [b"Return-Path: <Some.One@remote.test>\r\n" + message, b"Return-Path: <>\r\n" + message]
    )
    sizes = [m.size for m in await store.mailboxes.snapshot("alice@example.test")]
    assert sizes == [len(b"Return-Path: <Some.One@remote.test>\r\n" + message), len(b"Return-Path: <>\r\n" + message)]
