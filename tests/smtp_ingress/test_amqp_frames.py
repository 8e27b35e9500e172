"""The frames Postroom marshals itself (shared/amqp_frames.py) are byte for byte what aio_pika and aiormq send."""

from __future__ import annotations

import itertools
from typing import Any

import aio_pika
import pamqp.frame
import pytest
from pamqp import commands as spec
from pamqp.body import ContentBody
from pamqp.encode import field_table
from pamqp.header import ContentHeader

from shared.amqp_frames import content_header_frame, envelope_table, message_frames
from shared.envelope import Envelope

ENVELOPES = [
    Envelope("01ABCDEFGHJKMNPQRSTVWXYZ00", "", ("a@b.example",)),
    Envelope(
        "01ABCDEFGHJKMNPQRSTVWXYZ01",
        "sender@example.org",
        ("one@local.test", "two@local.test", "drei@lökal.test"),
        first_seen=1795823142.0333877,
        client_address="2001:db8::1",
        auth_user="sender@example.org",
        esmtp=("BODY=8BITMIME", "SMTPUTF8"),
    ),
    Envelope("01ABCDEFGHJKMNPQRSTVWXYZ02", "ü@ex.example", ("x@y.example",), first_seen=0.1, client_address="::1"),
    Envelope(
        "01ABCDEFGHJKMNPQRSTVWXYZ03",
        "a@b.example",
        ("c@d.example", "e@f.example"),
        dsn_ret="HDRS",
        dsn_envid="QQ314159",
        dsn_recipients=(("c@d.example", "SUCCESS,FAILURE", "rfc822;C@d.example"), ("e@f.example", "NEVER", "")),
    ),
    Envelope("01ABCDEFGHJKMNPQRSTVWXYZ04", "a@b.example", ("c@d.example",), dsn_ret="FULL"),
    *(
        Envelope(
            "01ABCDEFGHJKMNPQRSTVWXYZ03",
            "a@b",
            ("x@y", "z@y"),
            attempt=attempt,
            last_errors=(("x@y", "451 4.2.0 try later"), ("z@y", "")),
        )
        for attempt in (1, 127, 128, 32767, 32768, 65535, 65536, 2**31, 2**32)
    ),
]


def _aio_pika_properties(envelope: Envelope) -> spec.Basic.Properties:
    """What the ingress published through aio_pika before it marshalled its frames itself."""
    return aio_pika.Message(
        b"", headers=envelope.to_headers(), delivery_mode=aio_pika.DeliveryMode.PERSISTENT, message_id=envelope.queue_id
    ).properties


@pytest.mark.parametrize("envelope", ENVELOPES)
def test_envelope_table_is_pamqps_field_table(envelope: Envelope) -> None:
    assert envelope_table(envelope) == field_table(envelope.to_headers())


@pytest.mark.parametrize("envelope", ENVELOPES)
def test_content_header_is_aio_pikas(envelope: Envelope) -> None:
    for channel, size in itertools.product((1, 2, 65535), (0, 1, 1024, 2**40)):
        expected = pamqp.frame.marshal(
            ContentHeader(properties=_aio_pika_properties(envelope), body_size=size), channel
        )
        assert content_header_frame(channel, size, envelope) == expected


@pytest.mark.parametrize("envelope", ENVELOPES)
def test_content_header_reads_back_as_the_envelope(envelope: Envelope) -> None:
    frame = content_header_frame(1, 0, envelope)
    consumed, channel, header = pamqp.frame.unmarshal(frame)
    assert (consumed, channel) == (len(frame), 1)
    assert isinstance(header, ContentHeader)
    assert header.properties.delivery_mode == 2 and header.properties.message_id == envelope.queue_id
    assert Envelope.from_headers(header.properties.headers or {}) == envelope


def test_message_id_must_fit_a_short_string() -> None:
    with pytest.raises(ValueError):
        content_header_frame(1, 0, Envelope("", "", ("a@b",)))
    with pytest.raises(ValueError):
        content_header_frame(1, 0, Envelope("x" * 256, "", ("a@b",)))


@pytest.mark.parametrize("size", [0, 1, 99, 100, 101, 250, 300])
def test_message_frames_are_aiormqs(size: int) -> None:
    """Basic.Publish, the content header and the body cut as aiormq's basic_publish cuts it (limit 100 here)."""
    envelope = ENVELOPES[1]
    body = bytes(range(256)) * 2
    body = body[:size]
    limit = 100
    publish = spec.Basic.Publish(exchange="ns", routing_key="ns.incoming", mandatory=True)
    header = ContentHeader(properties=_aio_pika_properties(envelope), body_size=size)
    if not body:
        pieces: list[bytes] = []
    elif size < limit:
        pieces = [body]
    else:
        pieces = [body[start : start + limit] for start in range(0, size, limit)]
    frames: list[Any] = [publish, header, *map(ContentBody, pieces)]
    expected = b"".join(pamqp.frame.marshal(frame, 7) for frame in frames)
    assert message_frames(pamqp.frame.marshal(publish, 7), 7, limit, body, envelope) == expected
