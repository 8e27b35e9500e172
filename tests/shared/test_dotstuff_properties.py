"""Properties of dot-stuffing out (relayed DATA, POP3 bodies): chunking never matters, nothing sent ends early."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from services.smtp_ingress.data import END, DataDecoder
from services.smtp_ingress.message import normalise_line_ends
from shared import dotstuff
from shared.dotstuff import DotStuffer, LineEnds, crlf_only

PIECES = [b"\r", b"\n", b".", b"\r\n", b"\r\n.", b"..", b"\r\n.\r\n", b"\n.\n", b"\r.\r", b"text", b".\r\n"]
body = st.lists(st.one_of(st.sampled_from(PIECES), st.binary(max_size=8)), max_size=40).map(b"".join)
cuts = st.lists(st.integers(0, 400), max_size=12)


def split_at(data: bytes, points: list[int]) -> list[bytes]:
    edges = sorted({min(max(p, 0), len(data)) for p in points} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(edges)]


def send(chunks: list[bytes]) -> bytes:
    """What goes on the wire for a body read in `chunks`: CRLF line ends, stuffed, then the final dot line."""
    ends, stuffer = LineEnds(), DotStuffer()
    wire = b"".join(stuffer.feed(ends.feed(chunk)) for chunk in chunks)
    return wire + stuffer.feed(ends.finish()) + stuffer.finish()


def receive(wire: bytes) -> tuple[bytes, bytes]:
    """A receiver's reading of the wire (our own DATA decoder): (text, what followed the end of data)."""
    out: list[bytes] = []
    decoder = DataDecoder(None, out.append)
    rest = decoder.feed(wire)
    assert decoder.done
    return b"".join(out), rest


@settings(max_examples=400, deadline=None)
@given(data=body, cuts=cuts)
@example(b"a\r", [2])
@example(b".", [1])
@example(b"\r\n.", [1, 2])
def test_any_chunking_sends_the_same_bytes(data: bytes, cuts: list[int]) -> None:
    assert send(split_at(data, cuts)) == send([data])


@settings(max_examples=400, deadline=None)
@given(data=body, cuts=cuts)
def test_line_ends_are_crlf_only_whatever_the_chunks(data: bytes, cuts: list[int]) -> None:
    ends = LineEnds()
    out = b"".join(ends.feed(chunk) for chunk in split_at(data, cuts)) + ends.finish()
    assert out == normalise_line_ends(data)


@settings(max_examples=400, deadline=None)
@given(data=body, cuts=cuts)
def test_stuffed_then_unstuffed_is_the_message_and_ends_only_at_the_end(data: bytes, cuts: list[int]) -> None:
    wire = send(split_at(data, cuts))
    # The only CRLF.CRLF (counting the CRLF before the body) is the final one.
    assert (b"\r\n" + wire).find(END) == len(wire) + 2 - len(END)
    assert b"\r" not in wire.replace(b"\r\n", b"") and b"\n" not in wire.replace(b"\r\n", b"")
    text, rest = receive(wire)
    expected = normalise_line_ends(data)
    if expected and not expected.endswith(b"\r\n"):
        expected += b"\r\n"  # a message without a final line end gets one before the dot line
    assert (text, rest) == (expected, b"")


def counted_crlf_only(data: bytes) -> bool:
    """The obvious definition: as many CRLFs as CRs and as LFs."""
    crlf = data.count(b"\r\n")
    return data.count(b"\r") == crlf == data.count(b"\n")


@settings(max_examples=400, deadline=None)
@given(data=body, window=st.sampled_from([1, 2, 3, 7, 1 << 16]))
@example(data=b"\n", window=1 << 16)
@example(data=b"\r", window=1 << 16)
@example(data=b"a\r\nb\r", window=1)
@example(data=b"\r\n\r\n", window=2)
def test_crlf_only_is_the_counting_definition(data: bytes, window: int) -> None:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(dotstuff, "_WINDOW", window)  # windows of any size: the pair across each edge is seen
        assert crlf_only(data) == counted_crlf_only(data)


@given(body, body, cuts)
@example(b"", b".a\r\n", [])
@example(b"X: y\r\n", b"a", [1])
def test_a_body_in_wire_form_goes_out_as_stored(header: bytes, data: bytes, points: list[int]) -> None:
    """What `wire_form` accepts, `WireBody` sends unchanged (plus the dot line) exactly as the full pass would."""
    from services.store.mailbox import to_crlf

    stored = to_crlf(data)
    if not dotstuff.wire_form(header, stored):
        return
    whole = header + stored
    wire = dotstuff.WireBody()
    chunks = split_at(whole, points)
    assert b"".join(wire.feed(chunk) for chunk in chunks) + wire.finish() == send(chunks)


@given(body)
def test_the_store_keeps_crlf_bodies_as_they_are_and_mends_the_others(data: bytes) -> None:
    """`to_crlf` hands back a body already CRLF only unchanged (no copy) and turns every other line end into CRLF."""
    from services.store.mailbox import to_crlf

    mended = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")
    stored = to_crlf(data)
    assert stored == mended
    if mended == data:
        assert stored is data
