"""Properties of the envelope's AMQP mapping: any envelope round-trips, and our frames are aio_pika's byte for byte."""

from __future__ import annotations

import contextlib

import aio_pika
import pamqp.frame
from hypothesis import given, settings
from hypothesis import strategies as st
from pamqp.decode import field_table as decode_table
from pamqp.encode import field_table
from pamqp.header import ContentHeader

from shared.amqp_frames import content_header_frame, envelope_table
from shared.envelope import Envelope
from shared.queue_id import new_queue_id

# Text as the ingress hands it over: any Unicode but surrogates (addresses with undecodable bytes are refused).
text = st.text(st.characters(exclude_categories=["Cs"]), max_size=40)
# Addresses never hold a tab or a control character (policy.check_address), so "rcpt<TAB>reason" splits cleanly.
address = st.text(st.characters(exclude_categories=["Cs", "Cc"]), min_size=1, max_size=40)
queue_ids = st.builds(new_queue_id, st.floats(0, 2**47 / 1000, allow_nan=False))


@st.composite
def envelopes(draw: st.DrawFn) -> Envelope:
    recipients = tuple(draw(st.lists(address, min_size=1, max_size=6)))
    failed = draw(st.lists(st.sampled_from(recipients), max_size=len(recipients), unique=True))
    return Envelope(
        queue_id=draw(queue_ids),
        mail_from=draw(st.one_of(st.just(""), address)),
        recipients=recipients,
        first_seen=draw(st.floats(0, 4e9, allow_nan=False, allow_infinity=False)),
        attempt=draw(st.integers(0, 2**40)),
        client_address=draw(st.one_of(st.just(""), st.ip_addresses().map(str))),
        auth_user=draw(st.one_of(st.just(""), address)),
        esmtp=tuple(
            draw(st.lists(st.sampled_from(["BODY=8BITMIME", "SMTPUTF8", "BODY=7BIT", "RET=HDRS"]), max_size=3))
        ),
        last_errors=tuple((rcpt, draw(text)) for rcpt in failed),
        dsn_ret=draw(st.sampled_from(["", "FULL", "HDRS"])),
        dsn_envid=draw(
            st.one_of(st.just(""), st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=100))
        ),
        dsn_recipients=tuple(
            (rcpt, draw(st.sampled_from(["", "NEVER", "SUCCESS", "FAILURE,DELAY"])), draw(st.just("") | address))
            for rcpt in draw(st.lists(st.sampled_from(recipients), max_size=len(recipients), unique=True))
        ),
    )


@settings(max_examples=300, deadline=None)
@given(envelope=envelopes())
def test_any_envelope_round_trips_through_headers(envelope: Envelope) -> None:
    assert Envelope.from_headers(envelope.to_headers()) == envelope


@settings(max_examples=300, deadline=None)
@given(envelope=envelopes())
def test_our_table_is_pamqps_and_decodes_back(envelope: Envelope) -> None:
    table = envelope_table(envelope)
    assert table == field_table(envelope.to_headers())
    consumed, headers = decode_table(table)
    assert consumed == len(table)
    assert Envelope.from_headers(headers) == envelope


@settings(max_examples=200, deadline=None)
@given(envelope=envelopes(), channel=st.integers(1, 65535), size=st.integers(0, 2**40))
def test_our_content_header_is_aio_pikas(envelope: Envelope, channel: int, size: int) -> None:
    properties = aio_pika.Message(
        b"", headers=envelope.to_headers(), delivery_mode=aio_pika.DeliveryMode.PERSISTENT, message_id=envelope.queue_id
    ).properties
    expected = pamqp.frame.marshal(ContentHeader(properties=properties, body_size=size), channel)
    frame = content_header_frame(channel, size, envelope)
    assert frame == expected
    _, _, header = pamqp.frame.unmarshal(frame)
    assert isinstance(header, ContentHeader) and header.body_size == size
    assert Envelope.from_headers(header.properties.headers or {}) == envelope


@settings(max_examples=300, deadline=None)
@given(
    headers=st.dictionaries(
        st.sampled_from([f"x-postroom-{n}" for n in ("queue-id", "mail-from", "rcpt-to", "first-seen", "attempt")])
        | text,
        st.one_of(text, st.binary(max_size=10), st.integers(), st.floats(), st.none(), st.lists(text, max_size=3)),
    )
)
def test_foreign_headers_give_an_envelope_or_a_value_error(headers: dict[str, object]) -> None:
    # The consumer dead-letters on ValueError or TypeError; anything else would requeue a poison message.
    with contextlib.suppress(ValueError, TypeError):
        Envelope.from_headers(headers)


def test_a_message_queued_before_dsn_reads_with_no_dsn_request() -> None:
    old = Envelope(new_queue_id(), "a@b.example", ("c@d.example",)).to_headers()
    assert not any("dsn" in key for key in old)  # nothing new on the wire without parameters
    envelope = Envelope.from_headers(old)
    assert (envelope.dsn_ret, envelope.dsn_envid, envelope.dsn_recipients) == ("", "", ())
    assert envelope.dsn_request("c@d.example").wants("FAILURE")
    assert not envelope.dsn_request("c@d.example").wants("SUCCESS")
