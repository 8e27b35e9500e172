"""Publishing to the `incoming` exchange over aiormq's channel with frames we marshal ourselves (shared/amqp_frames.py).

A message held in memory goes out as one buffer put on the connection's write queue, joined with the publishes
waiting there; a large one (spooled to a file) is written a frame at a time by `publish_streamed`.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Any

from aiormq.abc import ChannelFrame
from aiormq.channel import Channel

from shared.amqp_frames import (
    body_frames,
    content_header_frame,
    forget,
    message_frames,
    publish_frame,
    publish_streamed,
    register,
    unregister,
)
from shared.envelope import Envelope
from shared.spool import MessageSpool

# Publishes waiting in the write queue are joined into buffers of at most this size (each join copies the buffer).
JOIN_LIMIT = 64 * 1024


class IncomingExchange:
    """Mandatory, persistent publishes to one exchange and routing key on one confirming aiormq channel."""

    def __init__(self, channel: Channel, exchange: str, routing_key: str) -> None:
        if not channel.publisher_confirms:
            raise ValueError("the channel must have publisher confirms on")
        self.channel = channel
        self.name = exchange
        self.routing_key = routing_key
        self._publish_frame = publish_frame(channel.number, exchange, routing_key)
        self._queued: ChannelFrame | None = None  # our last frame put on the write queue

    async def publish(self, body: bytes, envelope: Envelope) -> Any:
        """Publish `body`; return the broker's confirm (raises on a nack, a return or a closed channel)."""
        channel = self.channel
        payload = message_frames(self._publish_frame, channel.number, channel.max_content_size, body, envelope)
        # No drain future: the confirm, awaited below, comes after the broker read the frames anyway, and not
        # holding the channel lock until the socket drained lets the publishes of other sessions go out meanwhile.
        message_id = envelope.queue_id
        async with channel.lock:
            tag, confirmation = register(channel, message_id)
            if not self._join_queued(payload):
                frame = ChannelFrame(payload=payload, should_close=False)
                try:
                    channel.write_queue.put_nowait(frame)
                except asyncio.QueueFull:
                    try:
                        await channel.write_queue.put(frame)
                    except BaseException:
                        # Not queued (asyncio.Queue.put enqueues only after its last await): the broker never sees it.
                        unregister(channel, message_id, tag, confirmation)
                        raise
                self._queued = frame
        confirmation.add_done_callback(lambda _: forget(channel, message_id, tag))
        return await confirmation

    def _join_queued(self, payload: bytes) -> bool:
        """Append `payload` to our frame if that is still the last one waiting in the connection's write queue: the
        publishes of a busy moment then go out with one socket write (the writer takes a frame per write). The
        frames stay in publish order, the order of their delivery tags; nothing else is on the queue after ours."""
        last = self._queued
        waiting: deque[ChannelFrame] = self.channel.write_queue._queue  # type: ignore[attr-defined]
        if last is None or not waiting or waiting[-1] is not last or len(last.payload) + len(payload) > JOIN_LIMIT:
            return False
        joined = ChannelFrame(payload=last.payload + payload, should_close=False)
        waiting[-1] = self._queued = joined
        return True

    async def publish_streamed(
        self, prefix: bytes, spool: MessageSpool, envelope: Envelope, on_partial: Callable[[], None]
    ) -> Any:
        """Publish `prefix` and the spool's text a frame at a time; return the broker's confirm. If the frames stop
        part way (an error, a timeout's cancellation), the channel is left in the middle of a content and no later
        publish may use it: `on_partial` is called to drop the connection, which makes the broker discard the
        incomplete message."""
        channel = self.channel
        number = channel.number
        size = len(prefix) + spool.size
        frames = body_frames(
            self._publish_frame + content_header_frame(number, size, envelope),
            number,
            spool.chunks(prefix, channel.max_content_size),
            size,
        )
        return await publish_streamed(channel, envelope.queue_id, frames, on_partial)
