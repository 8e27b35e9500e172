"""Publishing over an aiormq channel with frames we marshal ourselves, reusing aiormq 7.x's publish bookkeeping.

A Postroom publish always has the same shape: Basic.Publish to one exchange and routing key, mandatory; content
properties `headers` (the envelope), `delivery_mode` 2 (persistent), `priority` 0 and `message_id` (the queue id).
`content_header_frame` marshals the content header straight from the `Envelope`, to the very bytes that aio_pika's
Message and pamqp would give (tests/smtp_ingress/test_amqp_frames.py compares them), at a fraction of their cost.

aiormq's own bookkeeping is reused so confirms, nacks and returns reach these publishes exactly as they reach
`basic_publish`: the channel lock (no other publish may put frames between ours), the delivery tag counter,
`confirmations`, `message_id_delivery_tag` (returns are matched by message id). These are internals of aiormq 7.x;
pyproject.toml pins that range.

`publish_streamed` writes a large body a frame at a time, waiting for the socket to drain after each: aiormq's
`basic_publish` would split the body into frames (one copy) and marshal all of them into one buffer (a second copy)
before writing anything. The ingress streams spooled messages with it, the delivery large retries.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pamqp.frame
from aiormq.abc import ChannelFrame
from aiormq.channel import Channel
from pamqp import commands as spec
from pamqp.encode import table_integer

from shared.envelope import HEADER_PREFIX, Envelope

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


def _dsn_fields(envelope: Envelope) -> bytes:
    """The DSN headers (in their sorted place), present only when the client gave DSN parameters."""
    fields: list[bytes] = []
    for key, value in envelope.dsn_headers().items():
        fields += (
            _key(key.removeprefix(HEADER_PREFIX)),
            _array(value) if isinstance(value, list) else _long_string(value),
        )
    return b"".join(fields)


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
            _dsn_fields(envelope) if envelope.dsn_envid or envelope.dsn_recipients or envelope.dsn_ret else b"",
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


def publish_frame(channel_number: int, exchange: str, routing_key: str) -> bytes:
    """The Basic.Publish frame of a mandatory publish."""
    publish = spec.Basic.Publish(exchange=exchange, routing_key=routing_key, mandatory=True)
    return pamqp.frame.marshal(publish, channel_number)


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


def body_frames(head: bytes, channel_number: int, pieces: Iterable[bytes | memoryview], size: int) -> Iterator[bytes]:
    """`head` (Basic.Publish and content header), then a body frame per piece, built only when asked for, so one
    frame at a time is in memory. Raises once the pieces do not add up to the `size` the header announced."""
    yield head
    sent = 0
    for piece in pieces:
        sent += len(piece)
        if sent > size:
            break
        yield _FRAME_HEAD.pack(_BODY_FRAME, channel_number, len(piece)) + piece + _FRAME_END
    if sent != size:
        # The header promised `size` bytes; anything else would make the broker misread the stream.
        raise RuntimeError(f"message body is {sent} bytes, not the {size} announced")


async def publish_streamed(
    channel: Channel, message_id: str, frames: Iterable[bytes], on_partial: Callable[[], None]
) -> Any:
    """Put `frames` (one publish, from `body_frames`) on the channel's write queue one at a time, each after the
    previous one drained to the socket; return the broker's confirm (raises on a nack, a return or a closed channel).
    If the frames stop part way (an error, a timeout's cancellation), the channel is left in the middle of a content
    and no later publish may use it: `on_partial` is called, still under the channel lock, to drop the connection,
    which makes the broker discard the incomplete message."""
    async with channel.lock:
        tag, confirmation = register(channel, message_id)
        started = finished = False
        try:
            for payload in frames:
                drained = channel.create_future()  # rejected by aiormq when the channel or connection closes
                await channel.write_queue.put(ChannelFrame(payload=payload, should_close=False, drain_future=drained))
                started = True
                await drained
            finished = True
        except BaseException:
            if not started:
                unregister(channel, message_id, tag, confirmation)
            raise
        finally:
            if started and not finished:
                on_partial()
    confirmation.add_done_callback(lambda _: forget(channel, message_id, tag))
    return await confirmation


def register(channel: Channel, message_id: str) -> tuple[int, asyncio.Future[Any]]:
    """Take the next delivery tag and a future for its confirm, as `basic_publish` does (under the channel lock)."""
    channel.delivery_tag += 1
    tag: int = channel.delivery_tag
    confirmation = channel.create_future()
    channel.confirmations[tag] = confirmation
    channel.message_id_delivery_tag[message_id] = tag
    return tag, confirmation


def unregister(channel: Channel, message_id: str, tag: int, confirmation: asyncio.Future[Any]) -> None:
    """The broker never saw this publish: give its delivery tag back, as basic_publish does."""
    channel.delivery_tag -= 1
    channel.confirmations.pop(tag, None)
    forget(channel, message_id, tag)
    confirmation.cancel()


def forget(channel: Channel, message_id: str, tag: int) -> None:
    """Drop the message id → delivery tag entry once its confirm is in (unless a later publish reused the id)."""
    if channel.message_id_delivery_tag.get(message_id) == tag:
        channel.message_id_delivery_tag.pop(message_id)
