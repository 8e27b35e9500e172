"""The chunked DATA decoder and the spool, against aiosmtpd's line-by-line reading, for any split of the input."""

from __future__ import annotations

import itertools
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.smtp_ingress.data import LINE_LIMIT, TOO_LONG, TOO_MUCH, DataDecoder
from services.smtp_ingress.message import normalise_line_ends
from shared.spool import MessageSpool


def aiosmtpd_reading(stream: bytes) -> tuple[bytes, bytes, int]:
    """What aiosmtpd's smtp_DATA + normalise_line_ends made of `stream`: (text, bytes after the end, size)."""
    lines, position, size = [], 0, 0
    while True:
        end = stream.index(b"\r\n", position) + 2
        line, position = stream[position:end], end
        if line == b".\r\n":
            break
        size += len(line)
        lines.append(line[1:] if line.startswith(b".") else line)
    return normalise_line_ends(b"".join(lines)), stream[position:], size


def decode(chunks: list[bytes], size_limit: int | None = None) -> tuple[DataDecoder, bytes, bytes]:
    """Feed the chunks until the end is found: (decoder, text, bytes after the end)."""
    out: list[bytes] = []
    decoder = DataDecoder(size_limit, out.append)
    rest = b""
    for index, chunk in enumerate(chunks):
        rest = decoder.feed(chunk)
        if decoder.done:
            rest += b"".join(chunks[index + 1 :])
            break
    return decoder, b"".join(out), rest


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(max(cut, 0), len(data)) for cut in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points) if b > a]


# Bytes that matter to the decoder, and ordinary text.
PIECES = [b"\r", b"\n", b".", b"\r\n", b"\r\n.", b"..", b"a", b"text ", b"\r\n.\r", b"\n.\n"]


@settings(max_examples=400, deadline=None)
@given(
    pieces=st.lists(st.sampled_from(PIECES), max_size=40),
    after=st.sampled_from([b"", b"QUIT\r\n", b"RSET\r\nNOOP\r\n", b".\r\n"]),
    cuts=st.lists(st.integers(0, 400), max_size=12),
)
def test_any_split_decodes_like_aiosmtpd(pieces: list[bytes], after: bytes, cuts: list[int]) -> None:
    stream = b"".join(pieces) + b"\r\n.\r\n" + after
    expected_text, expected_rest, expected_size = aiosmtpd_reading(stream)
    decoder, text, rest = decode(split_at(stream, cuts))
    assert decoder.done and decoder.problem is None
    assert (text, rest, decoder.size) == (expected_text, expected_rest, expected_size)


def test_one_byte_at_a_time() -> None:
    stream = b"Subject: x\r\n\r\n..dot\r\nbare\rcr\nlf\r\n.\r\nQUIT\r\n"
    decoder, text, rest = decode([bytes([b]) for b in stream])
    assert text == b"Subject: x\r\n\r\n.dot\r\nbare\r\ncr\r\nlf\r\n"
    assert rest == b"QUIT\r\n" and decoder.size == len(stream) - len(b".\r\nQUIT\r\n")


@pytest.mark.parametrize("cut", range(1, 5))
def test_end_marker_split_across_reads(cut: int) -> None:
    stream = b"body\r\n.\r\n"
    at = len(b"body") + cut
    decoder, text, rest = decode([stream[:at], stream[at:]])
    assert decoder.done and text == b"body\r\n" and rest == b""


def test_end_marker_not_yet_complete_waits_for_more() -> None:
    decoder = DataDecoder(None, lambda _: None)
    for chunk in (b"body\r", b"\n", b".", b"\r"):
        assert decoder.feed(chunk) == b"" and not decoder.done
    assert decoder.feed(b"\nNOOP\r\n") == b"NOOP\r\n" and decoder.done


def test_dot_line_at_a_boundary_is_unstuffed() -> None:
    _, text, _ = decode([b"a\r\n", b"..b\r\n", b".", b".c\r\n.\r\n"])
    assert text == b"a\r\n.b\r\n.c\r\n"


def test_empty_message_and_leading_dot() -> None:
    assert decode([b".\r\nQUIT\r\n"])[1:] == (b"", b"QUIT\r\n")
    assert decode([b".", b"\r", b"\n"])[1:] == (b"", b"")
    assert decode([b".", b".x\r\n.\r\n"])[1] == b".x\r\n"
    assert decode([b"\r\n.\r\n"])[1] == b"\r\n"


def test_bare_cr_at_the_end_of_a_chunk() -> None:
    # The CR is a bare CR (normalised) when the next chunk starts with anything but LF, part of a CRLF otherwise.
    assert decode([b"a\r", b"b\r\n.\r\n"])[1] == b"a\r\nb\r\n"
    assert decode([b"a\r", b"\nb\r\n.\r\n"])[1] == b"a\r\nb\r\n"
    assert decode([b"a\r", b"\r\n.\r\n"])[1] == b"a\r\n\r\n"
    assert decode([b"a\r\n.\r", b"x\r\n.\r\n"])[1] == b"a\r\n\r\nx\r\n"


def test_fake_ends_split_anywhere_are_content() -> None:
    for fake_end in (b"\n.\n", b"\n.\r\n", b"\r.\r\n", b"\r\n.\r"):
        stream = b"first" + fake_end + b"MAIL FROM:<evil@remote.example>\r\n.\r\n"
        for at in range(1, len(stream)):
            _, text, rest = decode([stream[:at], stream[at:]])
            assert b"evil@remote.example" in text and rest == b"", (fake_end, at)
            assert b"\n" not in text.replace(b"\r\n", b"") and b"\r" not in text.replace(b"\r\n", b"")


def test_line_length_rule_is_aiosmtpd_s() -> None:
    fits = b"x" * (LINE_LIMIT - 1)
    assert decode([b"a\r\n" + fits + b"\r\n.\r\n"])[0].problem is None
    assert decode([b"." + fits[1:] + b"\r\n.\r\n"])[0].problem is None
    assert decode([b"." + fits + b"\r\n.\r\n"])[0].problem == TOO_LONG  # a stuffed dot counts, as received
    assert decode([b"a\r\n" + fits + b"y\r\n.\r\n"])[0].problem == TOO_LONG
    # A long line spread over many reads, with its CRLF at a boundary.
    long_line = [b"a\r\n", *[b"x" * 100] * 12, b"\r", b"\n.\r\n"]
    decoder, text, _ = decode(long_line)
    assert decoder.problem == TOO_LONG and len(text) < len(b"a\r\n") + LINE_LIMIT  # nothing kept past the problem


def test_size_limit_counts_octets_as_received_and_reads_to_the_end() -> None:
    body = b"..x\r\n" * 10  # 50 octets received, 40 after unstuffing
    decoder, _, rest = decode([body + b".\r\nQUIT\r\n"], size_limit=50)
    assert decoder.problem is None and rest == b"QUIT\r\n"
    decoder, text, rest = decode([body[:23], body[23:] + b".\r\nQUIT\r\n"], size_limit=49)
    assert decoder.problem == TOO_MUCH and decoder.done and rest == b"QUIT\r\n"
    assert len(text) < 40  # nothing after the limit was kept


def test_first_problem_wins() -> None:
    long_line = b"x" * 2000 + b"\r\n"
    assert decode([b"a" * 100 + b"\r\n" + long_line + b".\r\n"], size_limit=50)[0].problem == TOO_MUCH
    assert decode([long_line + b"a" * 100 + b"\r\n.\r\n"], size_limit=3000)[0].problem == TOO_LONG


def test_big_random_message_in_random_chunks() -> None:
    rnd = random.Random(7)
    lines = [bytes(rnd.choice(b"ab.\r\n ") for _ in range(rnd.randint(0, 200))) for _ in range(5000)]
    stream = b"\r\n".join(lines) + b"\r\n.\r\nQUIT\r\n"
    expected = aiosmtpd_reading(stream)
    cuts = [rnd.randint(0, len(stream)) for _ in range(300)]
    decoder, text, rest = decode(split_at(stream, cuts))
    assert (text, rest, decoder.size) == expected


def test_spool_moves_to_a_file_past_its_memory_limit(tmp_path: object) -> None:
    spool = MessageSpool(str(tmp_path), memory_limit=100)
    spool.write(b"a" * 60)
    assert spool.in_memory
    spool.write(b"b" * 60)
    spool.write(b"c" * 30)
    assert not spool.in_memory and spool.size == 150
    assert spool.head(70) == b"a" * 60 + b"b" * 10
    pieces = list(spool.chunks(b"PREFIX", 64))
    assert [len(p) for p in pieces] == [64, 64, 28]
    assert b"".join(pieces) == b"PREFIX" + b"a" * 60 + b"b" * 60 + b"c" * 30
    spool.close()
    spool.close()


def test_spool_in_memory_chunks_and_head() -> None:
    spool = MessageSpool.of(b"hello world")
    assert spool.in_memory and spool.head(5) == b"hello" and spool.head(100) == b"hello world"
    assert list(spool.chunks(b">", 4)) == [b">hel", b"lo w", b"orld"]
