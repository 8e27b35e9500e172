"""Publishing to the `incoming` exchange over aiormq's channel with frames we marshal ourselves (aiormq internals).

Every publish of the ingress has the same shape: Basic.Publish to one exchange and routing key, mandatory; content
properties `headers` (the envelope), `delivery_mode` 2 (persistent), `priority` 0 and `message_id` (the queue id).
The Basic.Publish frame is marshalled once per channel, and the content header straight from the `Envelope`, to
the very bytes that aio_pika's Message and pamqp would give (tests/smtp_ingress/test_amqp_frames.py compares
them), at a fraction of their cost per message.

aiormq's own bookkeeping is reused so confirms, nacks and returns reach these publishes exactly as they reach
`basic_publish`: the channel lock (no other publish may put frames between ours), the delivery tag counter,
`confirmations`, `message_id_delivery_tag` (returns are matched by message id). These are internals of aiormq 7.x;
pyproject.toml pins that range.

A message held in memory goes out as one buffer put on the connection's write queue. A large one (spooled to a
file) is written a frame at a time, waiting for the socket to drain after each: aiormq's `basic_publish` would split
the body into frames (one copy) and marshal all of them into one buffer (a second copy) before writing anything.
"""

from __future__ import annotations

import asyncio
import struct
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pamqp.frame
from aiormq.abc import ChannelFrame
from aiormq.channel import Channel
from pamqp import commands as spec
from pamqp.encode import table_integer

from shared.envelope import HEADER_PREFIX, Envelope
from shared.spool import MessageSpool

_FRAME_HEAD = struct.Struct(">BHI")  # frame type, channel, payload size
_FRAME_END = b"\xce"
_HEADER_FRAME = 2
_BODY_FRAME = 3
_CONTENT_HEAD = struct.Struct(">HHQH")  # class id (Basic), weight, body size, property flags
_BASIC_CLASS = 60
# content_type 15, content_encoding 14, headers 13, delivery_mode 12, priority 11, ..., message_id 7
_PROPERTY_FLAGS = (1 << 13) | (1 << 12) | (1 << 11) | (1 << 7)
_PERSISTENT_PRIORITY_0 = b"\x02\x00"
_UINT32 = struct.Struct(">I")
# Publishes waiting in the write queue are joined into buffers of at most this size (each join copies the buffer).
JOIN_LIMIT = 64 * 1024


def _key(name: str) -> bytes:
    encoded = (HEADER_PREFIX + name).encode()
    return bytes((len(encoded),)) + encoded


# The field table's keys in pamqp's order (sorted), each as a short string.
_ATTEMPT = _key("attempt")
_AUTH_USER = _key("auth-user")
_CLIENT_ADDRESS = _key("client-address")
_ESMTP = _key("esmtp")
_FIRST_SEEN = _key("first-seen")
_LAST_ERRORS = _key("last-errors")
_MAIL_FROM = _key("mail-from")
_QUEUE_ID = _key("queue-id")
_RCPT_TO = _key("rcpt-to")


def _long_string(text: str) -> bytes:
    encoded = text.encode()
    return b"S" + _UINT32.pack(len(encoded)) + encoded


def _array(texts: Iterable[str]) -> bytes:
    data = b"".join(map(_long_string, texts))
    return b"A" + _UINT32.pack(len(data)) + data


def envelope_table(envelope: Envelope) -> bytes:
    """`pamqp.encode.field_table(envelope.to_headers())`, without building the dict and dispatching on types."""
    data = b"".join(
        (
            _ATTEMPT,
            table_integer(envelope.attempt),
            _AUTH_USER,
            _long_string(envelope.auth_user),
            _CLIENT_ADDRESS,
            _long_string(envelope.client_address),
            _ESMTP,
            _array(envelope.esmtp),
            _FIRST_SEEN,
            _long_string(repr(envelope.first_seen)),
            _LAST_ERRORS,
            _array(f"{rcpt}\t{text}" for rcpt, text in envelope.last_errors),
            _MAIL_FROM,
            _long_string(envelope.mail_from),
            _QUEUE_ID,
            _long_string(envelope.queue_id),
            _RCPT_TO,
            _array(envelope.recipients),
        )
    )
    return _UINT32.pack(len(data)) + data


def content_header_frame(channel_number: int, body_size: int, envelope: Envelope) -> bytes:
    """The content header frame of a publish: the envelope as headers, persistent, priority 0, the queue id as
    message id (what `aio_pika.Message(body, headers=..., delivery_mode=PERSISTENT, message_id=...)` sends)."""
    message_id = envelope.queue_id.encode()
    if not message_id or len(message_id) > 255:
        raise ValueError("a publish needs a message id of 1 to 255 bytes (returns are matched by it)")
    payload = b"".join(
        (
            _CONTENT_HEAD.pack(_BASIC_CLASS, 0, body_size, _PROPERTY_FLAGS),
            envelope_table(envelope),
            _PERSISTENT_PRIORITY_0,
            bytes((len(message_id),)),
            message_id,
        )
    )
    return _FRAME_HEAD.pack(_HEADER_FRAME, channel_number, len(payload)) + payload + _FRAME_END


def message_frames(publish_frame: bytes, channel_number: int, limit: int, body: bytes, envelope: Envelope) -> bytes:
    """A whole publish in one buffer: the Basic.Publish frame, the content header, the body in frames of at most
    `limit` bytes, cut as aiormq cuts them (Channel._split_body; none for an empty body)."""
    frames = [publish_frame, content_header_frame(channel_number, len(body), envelope)]
    for start in range(0, len(body), limit):
        piece = body[start : start + limit]  # the body itself (no copy) when it fits one frame
        frames += (_FRAME_HEAD.pack(_BODY_FRAME, channel_number, len(piece)), piece, _FRAME_END)
    return b"".join(frames)


class IncomingExchange:
    """Mandatory, persistent publishes to one exchange and routing key on one confirming aiormq channel."""

    def __init__(self, channel: Channel, exchange: str, routing_key: str) -> None:
        if not channel.publisher_confirms:
            raise ValueError("the channel must have publisher confirms on")
        self.channel = channel
        self.name = exchange
        self.routing_key = routing_key
        publish = spec.Basic.Publish(exchange=exchange, routing_key=routing_key, mandatory=True)
        self._publish_frame = pamqp.frame.marshal(publish, channel.number)
        self._queued: ChannelFrame | None = None  # our last frame put on the write queue

    async def publish(self, body: bytes, envelope: Envelope) -> Any:
        """Publish `body`; return the broker's confirm (raises on a nack, a return or a closed channel)."""
        channel = self.channel
        payload = message_frames(self._publish_frame, channel.number, channel.max_content_size, body, envelope)
        # No drain future: the confirm, awaited below, comes after the broker read the frames anyway, and not
        # holding the channel lock until the socket drained lets the publishes of other sessions go out meanwhile.
        message_id = envelope.queue_id
        async with channel.lock:
            tag, confirmation = _register(channel, message_id)
            if not self._join_queued(payload):
                frame = ChannelFrame(payload=payload, should_close=False)
                try:
                    channel.write_queue.put_nowait(frame)
                except asyncio.QueueFull:
                    try:
                        await channel.write_queue.put(frame)
                    except BaseException:
                        # Not queued (asyncio.Queue.put enqueues only after its last await): the broker never sees it.
                        _unregister(channel, message_id, tag, confirmation)
                        raise
                self._queued = frame
        confirmation.add_done_callback(lambda _: _forget(channel, message_id, tag))
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
        frames = _frames(
            self._publish_frame + content_header_frame(number, size, envelope),
            number,
            spool.chunks(prefix, channel.max_content_size),
            size,
        )
        message_id = envelope.queue_id
        async with channel.lock:
            tag, confirmation = _register(channel, message_id)
            started = finished = False
            try:
                for payload in frames:
                    drained = channel.create_future()  # rejected by aiormq when the channel or connection closes
                    await channel.write_queue.put(
                        ChannelFrame(payload=payload, should_close=False, drain_future=drained)
                    )
                    started = True
                    await drained
                finished = True
            except BaseException:
                if not started:
                    _unregister(channel, message_id, tag, confirmation)
                raise
            finally:
                if started and not finished:
                    on_partial()
        confirmation.add_done_callback(lambda _: _forget(channel, message_id, tag))
        return await confirmation


def _register(channel: Channel, message_id: str) -> tuple[int, asyncio.Future[Any]]:
    """Take the next delivery tag and a future for its confirm, as `basic_publish` does (under the channel lock)."""
    channel.delivery_tag += 1
    tag: int = channel.delivery_tag
    confirmation = channel.create_future()
    channel.confirmations[tag] = confirmation
    channel.message_id_delivery_tag[message_id] = tag
    return tag, confirmation


def _unregister(channel: Channel, message_id: str, tag: int, confirmation: asyncio.Future[Any]) -> None:
    """The broker never saw this publish: give its delivery tag back, as basic_publish does."""
    channel.delivery_tag -= 1
    channel.confirmations.pop(tag, None)
    _forget(channel, message_id, tag)
    confirmation.cancel()


def _frames(head: bytes, number: int, pieces: Iterable[bytes], size: int) -> Iterator[bytes]:
    yield head
    sent = 0
    for piece in pieces:
        sent += len(piece)
        if sent > size:
            break
        yield _FRAME_HEAD.pack(_BODY_FRAME, number, len(piece)) + piece + _FRAME_END
    if sent != size:
        # The header promised `size` bytes; anything else would make the broker misread the stream.
        raise RuntimeError(f"message body is {sent} bytes, not the {size} announced")


def _forget(channel: Channel, message_id: str, tag: int) -> None:
    if channel.message_id_delivery_tag.get(message_id) == tag:
        channel.message_id_delivery_tag.pop(message_id)
