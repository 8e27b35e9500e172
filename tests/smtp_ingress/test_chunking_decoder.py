"""BDAT chunks decode to exactly DATA's text, for any content split at any place (RFC 3030 with DATA's rules)."""

from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from services.smtp_ingress.chunking import ChunkDecoder, parse_bdat
from services.smtp_ingress.data import LINE_LIMIT, TOO_LONG, TOO_MUCH, DataDecoder
from services.smtp_ingress.message import normalise_line_ends
from tests.smtp_ingress.test_data import aiosmtpd_reading, split_at

# The bytes whose meaning depends on their neighbours, and plain text.
PIECES = [b"\r", b"\n", b".", b"\r\n", b"\r\n.", b"..", b"a", b"text ", b"\r\n.\r\n", b"\n.\n", b"\r.\r"]


def as_data_stream(content: bytes) -> bytes:
    """What a DATA client sends for `content`: each CRLF-delimited line dot-stuffed, then CRLF.CRLF, the content's
    own last line end (a bare CR or LF too) being that CRLF."""
    if content.endswith((b"\r", b"\n")) and not content.endswith(b"\r\n"):
        content = content[:-1] + b"\r\n"
    lines = content.split(b"\r\n")
    stuffed = b"\r\n".join(b"." + line if line.startswith(b".") else line for line in lines)
    if not content or content.endswith(b"\r\n"):
        return stuffed + b".\r\n"
    return stuffed + b"\r\n.\r\n"


def chunked(chunks: list[bytes], size_limit: int | None = None) -> tuple[ChunkDecoder, bytes]:
    out: list[bytes] = []
    decoder = ChunkDecoder(size_limit, out.append)
    for chunk in chunks:
        decoder.feed(chunk)
    if decoder.problem is None:
        decoder.finish()
    return decoder, b"".join(out)


@settings(max_examples=500, deadline=None)
@given(pieces=st.lists(st.sampled_from(PIECES), max_size=40), cuts=st.lists(st.integers(0, 400), max_size=12))
@example(pieces=[b".", b"\r\n", b"."], cuts=[1, 2, 3])
@example(pieces=[b"\r"], cuts=[])
@example(pieces=[b"\r\n.\r\n"], cuts=[1, 2, 3, 4])
@example(pieces=[], cuts=[])
def test_any_split_gives_the_text_of_data(pieces: list[bytes], cuts: list[int]) -> None:
    content = b"".join(pieces)
    decoder, text = chunked(split_at(content, cuts))
    expected, rest, _size = aiosmtpd_reading(as_data_stream(content))
    assert rest == b""
    assert text == expected
    # The same in one sentence: line ends normalised as DATA's, a final CRLF added where the content lacks one.
    end = b"" if not content or content.endswith((b"\r", b"\n")) else b"\r\n"
    assert text == normalise_line_ends(content + end)
    assert decoder.problem is None
    assert b"\n" not in text.replace(b"\r\n", b"") and b"\r" not in text.replace(b"\r\n", b"")


@settings(max_examples=200, deadline=None)
@given(
    lines=st.lists(st.integers(0, LINE_LIMIT + 5), min_size=1, max_size=6),
    limit=st.integers(1, 3000),
    cuts=st.lists(st.integers(0, 6000), max_size=8),
)
def test_limits_are_judged_as_for_data(lines: list[int], limit: int, cuts: list[int]) -> None:
    content = b"".join(b"x" * n + b"\r\n" for n in lines)
    decoder, text = chunked(split_at(content, cuts), limit)
    data = DataDecoder(limit, lambda _text: None)
    data.feed(as_data_stream(content))
    assert decoder.problem == data.problem
    if decoder.problem is None:
        assert text == content


def test_a_too_big_message_is_known_at_the_chunk_that_crosses_the_limit() -> None:
    decoder = ChunkDecoder(100, lambda _text: None)
    decoder.feed(b"a" * 60 + b"\r\n")
    assert decoder.problem is None
    decoder.feed(b"b" * 60)
    assert decoder.problem == TOO_MUCH


def test_a_long_line_is_refused_as_in_data() -> None:
    decoder, _ = chunked([b"x" * LINE_LIMIT, b"\r\n"])
    assert decoder.problem == TOO_LONG


@pytest.mark.parametrize(
    ("arg", "parsed"),
    [
        ("10", (10, False)),
        ("0 LAST", (0, True)),
        ("5 last", (5, True)),
        (None, None),
        ("", None),
        ("-1", None),
        ("10 LAST x", None),
        ("10  LAST", None),
        ("1e3", None),
        ("x LAST", None),
        ("9" * 19, None),
    ],
)
def test_bdat_argument(arg: str | None, parsed: tuple[int, bool] | None) -> None:
    assert parse_bdat(arg) == parsed
