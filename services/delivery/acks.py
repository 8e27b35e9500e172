"""Acks gathered per `interval` (or event-loop iteration) into one Basic.Ack with multiple=True.

One multiple ack covers every finished delivery up to it.

The work queue is a quorum queue, where each ack is a Raft command; one multiple ack settles a whole run of
deliveries in one command, one frame and one send(), instead of one of each per message.

Rules (invariant 3 of docs/design.md: ack only after the outcome is durable):
- A delivery is acked only once the consumer called `ack` for it, i.e. after its outcome is durable.
- A multiple ack goes up to the highest finished tag below the lowest unfinished one. Deliveries settled otherwise
  (nack, reject) are holes it may span, because their own frame went out before (the consumer reports them with
  `settled` only after the nack was written, and frames of one channel reach the broker in order).
- A finished delivery behind an unfinished one (a slow remote relay, say) waits at most `hold` seconds, or until
  `hold_limit` of them wait, and is then acked on its own, so a slow message never holds the prefetch window.
- Delivery tags belong to a channel: each channel has its own window, and a closed channel's window is dropped
  unsent (the broker requeues what it held; the store's dedup keys and the progress record make the redelivery
  harmless: ledger.py).
- The frames of one channel are written in the order they were made; an individual ack is never overtaken by a
  multiple ack covering it (that would ack an unknown tag and close the channel).
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
from typing import Any

from aiormq.abc import ChannelFrame
from pamqp.commands import Basic

from shared.logging import get_logger

log = get_logger(__name__)

_WORKING = -1.0  # a window's state for a delivery not finished yet
_SETTLED = -2.0  # nacked, rejected or acked on its own: a hole a later multiple ack may span
# Any other state is the loop time at which the delivery finished (>= 0): waiting for its ack.


class Window:
    """The unsettled deliveries of one channel, by delivery tag, and the frames waiting to be written to it."""

    __slots__ = ("channel", "finished", "outbox", "putting", "state", "tags")

    def __init__(self, channel: Any) -> None:
        self.channel = channel
        self.tags: list[int] = []  # ascending
        self.state: dict[int, float] = {}
        self.finished = 0  # deliveries finished and not acked yet
        self.outbox: list[Basic.Ack] = []
        self.putting: asyncio.Task[None] | None = None  # a write waiting for room in the connection's frame queue

    @property
    def closed(self) -> bool:
        return bool(self.channel.is_closed)


class AckBatcher:
    """Tracks deliveries from receipt to ack; `ack` only marks, the frames go out `interval` seconds after the first
    unwritten ack (0: in the next loop iteration)."""

    def __init__(self, hold: float = 0.1, hold_limit: int = 16, interval: float = 0.0) -> None:
        self.hold = hold
        self.interval = interval
        self.hold_limit = max(1, hold_limit)
        self._windows: dict[int, Window] = {}  # by id() of the channel
        self._scheduled: asyncio.Handle | None = None  # the flush due after the ack interval
        self._timer: asyncio.TimerHandle | None = None
        self.stats = {"acked": 0, "frames": 0, "writes": 0}  # deliveries acked, Basic.Ack frames, frame writes

    def track(self, channel: Any, tag: int) -> Window:
        """Register a delivery as it arrives (before any work on it); returns the handle for `ack`/`settled`."""
        window = self._windows.get(id(channel))
        if window is None or window.channel is not channel:
            window = self._windows[id(channel)] = Window(channel)
        tags = window.tags
        if not tags or tag > tags[-1]:
            tags.append(tag)
        else:
            bisect.insort(tags, tag)
        window.state[tag] = _WORKING
        return window

    def ack(self, window: Window, tag: int) -> None:
        """The delivery's outcome is durable: ack it with the next batch."""
        if window.state.get(tag) != _WORKING:
            return
        window.state[tag] = asyncio.get_running_loop().time()
        window.finished += 1
        self._schedule()

    def settled(self, window: Window, tag: int) -> None:
        """The delivery was nacked or rejected, and that frame is written: a later multiple ack may span it."""
        state = window.state.get(tag)
        if state is None or state == _SETTLED:
            return
        if state >= 0:
            window.finished -= 1
        window.state[tag] = _SETTLED
        self._schedule()

    def pending(self) -> int:
        """Finished deliveries (and frames) of open channels whose ack is not written yet: zero when all went out."""
        return sum(w.finished + len(w.outbox) for w in self._windows.values() if not w.closed)

    async def close(self) -> None:
        """Write every finished delivery's ack now (at shutdown, before the channel closes)."""
        self._flush(force=True)
        for window in list(self._windows.values()):
            if window.putting is not None:
                with contextlib.suppress(Exception):
                    await window.putting
            if window.outbox and not window.closed:
                with contextlib.suppress(Exception):
                    await window.channel.write_queue.put(self._frame(window))
        for handle in (self._timer, self._scheduled):
            if handle is not None:
                handle.cancel()
        self._timer = self._scheduled = None
        log.info("acks written", **self.stats)

    def _schedule(self) -> None:
        if self._scheduled is None:
            loop = asyncio.get_running_loop()
            if self.interval > 0:
                self._scheduled = loop.call_later(self.interval, self._flush)
            else:
                self._scheduled = loop.call_soon(self._flush)

    def _on_timer(self) -> None:
        self._timer = None
        self._flush()

    def _flush(self, force: bool = False) -> None:
        if self._scheduled is not None:
            self._scheduled.cancel()  # a forced flush (close) does the scheduled one's work
            self._scheduled = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        wake: float | None = None
        for key, window in list(self._windows.items()):
            if window.closed:
                # Its deliveries go back to the queue with the channel; nothing of it may be sent on another one.
                if window.putting is not None:
                    window.putting.cancel()
                del self._windows[key]
                continue
            oldest = self._collect(window, now, force)
            if oldest is not None:
                wake = oldest + self.hold if wake is None else min(wake, oldest + self.hold)
            if window.outbox and window.putting is None:
                self._write(window)
        if wake is not None and self._timer is None:
            self._timer = loop.call_at(wake, self._on_timer)

    def _collect(self, window: Window, now: float, force: bool) -> float | None:
        """Move the acks due in `window` to its outbox; returns when the oldest held delivery finished, if any."""
        tags, state = window.tags, window.state
        top = 0
        covered = 0
        done = 0
        for tag in tags:
            found = state[tag]
            if found == _WORKING:
                break
            if found >= 0:
                top = tag
                covered += 1
            done += 1
        if done:
            for tag in tags[:done]:
                del state[tag]
            del tags[:done]
        if top:
            window.outbox.append(Basic.Ack(delivery_tag=top, multiple=True))
            window.finished -= covered
            self.stats["acked"] += covered
        if not window.finished:
            return None
        held = [(tag, found) for tag in tags if (found := state[tag]) >= 0]
        oldest = min(found for _, found in held)
        if not force and len(held) < self.hold_limit and now - oldest < self.hold:
            return oldest
        # Behind an unfinished delivery for too long (or too many): each on its own, never covering the slow one.
        for tag, _ in held:
            window.outbox.append(Basic.Ack(delivery_tag=tag, multiple=False))
            state[tag] = _SETTLED
        self.stats["acked"] += len(held)
        window.finished = 0
        return None

    def _frame(self, window: Window) -> ChannelFrame:
        self.stats["frames"] += len(window.outbox)
        self.stats["writes"] += 1
        frame = ChannelFrame.marshall(channel_number=window.channel.number, frames=window.outbox)
        window.outbox = []
        return frame

    def _write(self, window: Window) -> None:
        """All of the window's outbox in one frame write (one send()); in order behind a write still waiting."""
        queue = window.channel.write_queue
        if queue.full():
            window.putting = asyncio.get_running_loop().create_task(self._put(window, self._frame(window)))
            return
        queue.put_nowait(self._frame(window))

    async def _put(self, window: Window, frame: ChannelFrame) -> None:
        try:
            await window.channel.write_queue.put(frame)
        finally:
            window.putting = None
            if window.outbox:
                self._schedule()
