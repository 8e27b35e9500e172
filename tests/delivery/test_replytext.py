"""Remote replies made readable where they enter our outcomes: any bytes in, one line of UTF-8-encodable text out."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from services.delivery.replytext import MAX_LENGTH, readable, reply


def wire(raw: bytes) -> str:
    """What aiosmtplib hands over for a reply's bytes."""
    return raw.decode("utf-8", "surrogateescape")


def test_latin1_and_cp1252_bytes_read_as_text() -> None:
    assert reply(550, wire(b"5.1.1 M\xfcller unknown")) == "550 5.1.1 Müller unknown"
    assert readable(wire(b"\x93quoted\x94 \x80 5")) == "“quoted” € 5"
    assert readable(b"5.1.1 M\xfcller") == "5.1.1 Müller"


def test_utf8_is_kept_even_next_to_latin1() -> None:
    assert readable(wire("Jörg ".encode() + b"M\xfcller")) == "Jörg Müller"


def test_controls_and_line_breaks_become_single_spaces() -> None:
    assert readable(wire(b"5.1.1 first line\nsecond\r\n\tthird\x00\x1b[31m end")) == (
        "5.1.1 first line second third [31m end"
    )
    assert readable("a\u2028b\u2029c\x85d") == "a b c d"  # as text, NEL is a line break; as a byte, cp1252's …


def test_lone_surrogates_not_from_the_wire_are_replaced_and_length_is_bounded() -> None:
    assert readable("x\ud800y") == "x\ufffdy"
    long = readable("word " * 1000)
    assert len(long) == MAX_LENGTH and long.endswith("...")


@given(st.binary(max_size=2000))
def test_any_bytes_give_one_encodable_line(raw: bytes) -> None:
    text = readable(wire(raw))
    text.encode("utf-8")
    assert "\r" not in text and "\n" not in text and len(text) <= MAX_LENGTH
    assert text == text.strip()
