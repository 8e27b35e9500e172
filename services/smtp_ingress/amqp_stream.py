"""Publishing one large message frame by frame, so the ingress never holds the whole of it (uses aiormq internals)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from aiormq.abc import ChannelFrame
from aiormq.channel import Channel
from pamqp import commands as spec
from pamqp.body import ContentBody
from pamqp.header import ContentHeader

# aiormq's `basic_publish` splits the body into frames (one copy) and marshals all of them into one buffer (a
# second copy) before writing anything: 2x the message on top of our own. Here the same frames (Basic.Publish,
# the content header with the total size, body frames of at most frame_max - 8 bytes) are written one at a time
# from the spool, waiting for the socket to drain after each. aiormq's own bookkeeping is reused so confirms,
# nacks and returns reach this publish exactly as they reach `basic_publish`: the channel lock (no other publish
# may put frames between ours), the delivery tag counter, `confirmations`, `message_id_delivery_tag`. These are
# internals of aiormq 7.x; pyproject.toml pins that range.


async def publish_streamed(
    channel: Channel,
    *,
    exchange: str,
    routing_key: str,
    properties: spec.Basic.Properties,
    size: int,
    pieces: Callable[[int], Iterable[bytes]],
    on_partial: Callable[[], None],
) -> Any:
    """Send one mandatory publish whose body is `pieces(max frame payload)` (`size` bytes in all); return the
    broker's confirm. If the frames stop part way (an error, a timeout's cancellation), the channel is left in the
    middle of a content and no later publish may use it: `on_partial` is called to drop the connection, which
    makes the broker discard the incomplete message."""
    message_id = properties.message_id
    if not message_id:
        raise ValueError("a streamed publish needs a message id (returns are matched by it)")
    frames = _frames(
        spec.Basic.Publish(exchange=exchange, routing_key=routing_key, mandatory=True),
        ContentHeader(properties=properties, body_size=size),
        pieces(channel.max_content_size),
        size,
    )
    async with channel.lock:
        channel.delivery_tag += 1
        tag = channel.delivery_tag
        confirmation = channel.create_future()
        channel.confirmations[tag] = confirmation
        channel.message_id_delivery_tag[message_id] = tag
        started = finished = False
        try:
            for frame in frames:
                drained = channel.create_future()  # rejected by aiormq when the channel or connection closes
                await channel.write_queue.put(
                    ChannelFrame.marshall(channel_number=channel.number, frames=frame, drain_future=drained)
                )
                started = True
                await drained
            finished = True
        except BaseException:
            if not started:
                # The broker never saw this publish: give its delivery tag back, as basic_publish does.
                channel.delivery_tag -= 1
                channel.confirmations.pop(tag, None)
                _forget(channel, message_id, tag)
                confirmation.cancel()
            raise
        finally:
            if started and not finished:
                on_partial()
    confirmation.add_done_callback(lambda _: _forget(channel, message_id, tag))
    return await confirmation


def _frames(
    publish: spec.Basic.Publish, header: ContentHeader, pieces: Iterable[bytes], size: int
) -> Iterator[list[Any]]:
    yield [publish, header]
    sent = 0
    for piece in pieces:
        sent += len(piece)
        if sent > size:
            break
        yield [ContentBody(piece)]
    if sent != size:
        # The header promised `size` bytes; anything else would make the broker misread the stream.
        raise RuntimeError(f"message body is {sent} bytes, not the {size} announced")


def _forget(channel: Channel, message_id: str, tag: int) -> None:
    if channel.message_id_delivery_tag.get(message_id) == tag:
        channel.message_id_delivery_tag.pop(message_id)
