"""The ack batcher on its own, with channels that record the frames written to them (decoded back from bytes)."""

from __future__ import annotations

import asyncio

from pamqp import frame as amqp_frame
from pamqp.commands import Basic

from services.delivery.acks import AckBatcher
from tests.helpers import wait_until


class FakeChannel:
    """Has what the batcher uses of an aiormq channel: its number, the connection's frame queue, is_closed."""

    def __init__(self, number: int = 1, room: int = 10) -> None:
        self.number = number
        self.is_closed = False
        self.write_queue: asyncio.Queue[object] = asyncio.Queue(maxsize=room)
        self.writes = 0

    def sent(self) -> list[tuple[int, bool]]:
        """(delivery tag, multiple) of every Basic.Ack queued so far, in order; counts the frame writes."""
        acks = []
        while not self.write_queue.empty():
            payload = self.write_queue.get_nowait().payload  # type: ignore[attr-defined]
            self.writes += 1
            while payload:
                used, channel, frame = amqp_frame.unmarshal(payload)
                payload = payload[used:]
                assert channel == self.number
                assert isinstance(frame, Basic.Ack)
                acks.append((frame.delivery_tag, frame.multiple))
        return acks


async def next_iteration() -> None:
    """Run the callbacks the batcher scheduled (its flush with call_soon, then a write it waits on): each round
    ends with a callback queued behind theirs, so it is their order, not a time, that this waits on."""
    loop = asyncio.get_running_loop()
    for _ in range(3):
        behind = loop.create_future()
        loop.call_soon(behind.set_result, None)
        await behind


async def test_out_of_order_completion_is_one_multiple_ack_per_run() -> None:
    batcher = AckBatcher(hold=3600, hold_limit=100)
    channel = FakeChannel()
    window = batcher.track(channel, 1)
    for tag in range(2, 7):
        batcher.track(channel, tag)
    for tag in (3, 1, 2):
        batcher.ack(window, tag)
    await next_iteration()
    assert channel.sent() == [(3, True)]
    assert channel.writes == 1
    batcher.ack(window, 6)  # behind the unfinished 4 and 5: held, not covered
    await next_iteration()
    assert channel.sent() == []
    batcher.ack(window, 5)
    batcher.ack(window, 4)
    await next_iteration()
    assert channel.sent() == [(6, True)]
    assert batcher.pending() == 0


async def test_a_slow_delivery_holds_later_acks_only_up_to_the_limit() -> None:
    batcher = AckBatcher(hold=3600, hold_limit=3)
    channel = FakeChannel()
    window = batcher.track(channel, 1)  # the slow one
    for tag in range(2, 8):
        batcher.track(channel, tag)
    batcher.ack(window, 2)
    batcher.ack(window, 3)
    await next_iteration()
    assert channel.sent() == []  # two held, under the limit
    batcher.ack(window, 4)
    await next_iteration()
    # Each on its own: a multiple ack would cover the unfinished delivery 1.
    assert channel.sent() == [(2, False), (3, False), (4, False)]
    assert channel.writes == 1  # in one write
    batcher.ack(window, 1)
    batcher.ack(window, 5)
    await next_iteration()
    assert channel.sent() == [(5, True)]  # spans the ones acked alone (no longer outstanding at the broker)


async def test_a_slow_delivery_holds_later_acks_only_for_the_hold_time() -> None:
    batcher = AckBatcher(hold=0.05, hold_limit=100)
    channel = FakeChannel()
    window = batcher.track(channel, 1)
    batcher.track(channel, 2)
    batcher.track(channel, 3)
    batcher.ack(window, 3)
    sent: list[tuple[int, bool]] = []

    async def acked_alone() -> bool:
        sent.extend(channel.sent())
        return bool(sent)

    await wait_until(acked_alone, what="the held ack written")
    assert sent == [(3, False)]
    batcher.ack(window, 2)
    batcher.ack(window, 1)
    await next_iteration()
    assert channel.sent() == [(2, True)]


async def test_a_nack_in_between_is_a_hole_not_an_ack() -> None:
    batcher = AckBatcher(hold=3600, hold_limit=100)
    channel = FakeChannel()
    window = batcher.track(channel, 1)
    for tag in range(2, 5):
        batcher.track(channel, tag)
    batcher.ack(window, 1)
    batcher.ack(window, 3)
    await next_iteration()
    assert channel.sent() == [(1, True)]  # 2 is still being worked on
    batcher.settled(window, 2)  # the consumer's nack for 2 went out on its own
    batcher.ack(window, 2)  # a late ack of a settled delivery is ignored
    await next_iteration()
    assert channel.sent() == [(3, True)]
    batcher.settled(window, 4)
    await next_iteration()
    assert channel.sent() == []  # nothing finished: a nacked tag alone is never acked
    assert batcher.pending() == 0


async def test_a_reconnect_between_completion_and_ack_sends_nothing_on_the_new_channel() -> None:
    batcher = AckBatcher(hold=3600, hold_limit=100)
    old = FakeChannel(number=1)
    first = batcher.track(old, 1)
    batcher.track(old, 2)
    batcher.track(old, 3)
    batcher.ack(first, 2)  # held behind 1
    old.is_closed = True  # the connection dropped: the broker requeues 1-3
    new = FakeChannel(number=1)  # the same number on the new connection, tags from 1 again
    second = batcher.track(new, 1)
    batcher.track(new, 2)
    batcher.ack(first, 1)  # old deliveries finishing late
    batcher.ack(first, 3)
    batcher.ack(second, 1)
    await next_iteration()
    assert old.sent() == []
    assert new.sent() == [(1, True)]  # the new channel's own tag 1, not a stale 1-3
    batcher.ack(second, 2)
    await next_iteration()
    assert new.sent() == [(2, True)]
    assert batcher.pending() == 0


async def test_a_full_frame_queue_keeps_the_order_of_writes() -> None:
    batcher = AckBatcher(hold=3600, hold_limit=2)
    channel = FakeChannel(room=1)
    channel.write_queue.put_nowait(object())  # full: the batcher must wait for room
    window = batcher.track(channel, 1)
    for tag in range(2, 6):
        batcher.track(channel, tag)
    batcher.ack(window, 2)
    batcher.ack(window, 3)  # two held: acked alone, waiting for room
    await next_iteration()
    batcher.ack(window, 1)
    batcher.ack(window, 4)
    await next_iteration()  # a multiple ack covering 2 and 3 must not overtake their own acks
    channel.write_queue.get_nowait()  # room again
    frames: list[tuple[int, bool]] = []

    async def written() -> bool:
        frames.extend(channel.sent())
        return len(frames) >= 3

    await wait_until(written, what="all acks written")
    assert frames == [(2, False), (3, False), (4, True)]


async def test_close_writes_held_acks() -> None:
    batcher = AckBatcher(hold=3600, hold_limit=100)
    channel = FakeChannel()
    window = batcher.track(channel, 1)
    batcher.track(channel, 2)
    batcher.ack(window, 2)
    await batcher.close()
    assert channel.sent() == [(2, False)]
