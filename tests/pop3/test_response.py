"""The wire form of replies: dot-stuffing, CRLF normalisation and TOP, whole and split at every chunk boundary."""

from __future__ import annotations

import random

import pytest

from services.pop3.response import BodyEncoder, MultiLine, Reply, encode_body


def _chunked(message: bytes, size: int, top: int | None = None) -> bytes:
    encoder = BodyEncoder(top)
    out = b""
    for start in range(0, len(message), size):
        out += encoder.feed(message[start : start + size])
        if encoder.done:
            break
    return out + encoder.finish()


def test_reply_lines() -> None:
    assert Reply(True, "2 320").encode() == b"+OK 2 320\r\n"
    assert Reply(False, "[IN-USE] locked").encode() == b"-ERR [IN-USE] locked\r\n"
    assert Reply(True, "").encode() == b"+OK\r\n"
    assert MultiLine(Reply(True, "x"), ["1 2", ".odd"]).encode() == b"+OK x\r\n1 2\r\n..odd\r\n.\r\n"


@pytest.mark.parametrize(
    ("stored", "wire"),
    [
        (b"a\r\nb\r\n", b"a\r\nb\r\n.\r\n"),
        (b".\r\n", b"..\r\n.\r\n"),
        (b"A\r\n.\r\nB\r\n", b"A\r\n..\r\nB\r\n.\r\n"),
        (b"..two\r\n.one\r\n", b"...two\r\n..one\r\n.\r\n"),
        (b"no final newline", b"no final newline\r\n.\r\n"),
        (b"bare\nlf\n.\n", b"bare\r\nlf\r\n..\r\n.\r\n"),
        (b"bare\rcr\r.\r", b"bare\r\ncr\r\n..\r\n.\r\n"),
        (b"mixed\r\n\n\r.x\r\n", b"mixed\r\n\r\n\r\n..x\r\n.\r\n"),
        (b"", b".\r\n"),
    ],
)
def test_retr_wire_form(stored: bytes, wire: bytes) -> None:
    assert encode_body(stored) == wire
    for size in range(1, len(stored) + 2):
        assert _chunked(stored, size) == wire, size


def _unstuff(wire: bytes) -> bytes:
    assert wire.endswith(b"\r\n.\r\n") or wire == b".\r\n"
    body = wire[: -len(b".\r\n")]
    lines = body.split(b"\r\n")
    return b"\r\n".join(line[1:] if line.startswith(b".") else line for line in lines)


def test_chunk_boundaries_on_every_split_of_a_dotty_message() -> None:
    stored = b"Subject: x\r\n\r\n" + b"".join(b"." * (i % 4) + b"line %d\r\n" % i for i in range(40)) + b".\r\n"
    whole = encode_body(stored)
    assert _unstuff(whole) == stored  # the client gets back exactly what is stored, and its size is len(stored)
    for size in (1, 2, 3, 5, 7, 64, 1000):
        assert _chunked(stored, size) == whole


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        (0, b"H: 1\r\nH: 2\r\n\r\n.\r\n"),
        (1, b"H: 1\r\nH: 2\r\n\r\nb1\r\n.\r\n"),
        (2, b"H: 1\r\nH: 2\r\n\r\nb1\r\n..b2\r\n.\r\n"),
        (9, b"H: 1\r\nH: 2\r\n\r\nb1\r\n..b2\r\nb3\r\n.\r\n"),
    ],
)
def test_top(lines: int, expected: bytes) -> None:
    stored = b"H: 1\r\nH: 2\r\n\r\nb1\r\n.b2\r\nb3\r\n"
    assert encode_body(stored, lines) == expected
    for size in range(1, len(stored) + 1):
        assert _chunked(stored, size, lines) == expected, size


def test_top_on_bare_lf_message_and_headers_only() -> None:
    assert encode_body(b"H: 1\n\nb1\nb2\n", 1) == b"H: 1\r\n\r\nb1\r\n.\r\n"
    assert encode_body(b"H: 1\r\nH: 2\r\n", 0) == b"H: 1\r\nH: 2\r\n.\r\n"


def _reference_wire(stored: bytes) -> bytes:
    """RETR's wire form the slow, obvious way: normalise the whole text, then stuff it line by line."""
    text = stored.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")
    lines = text.split(b"\r\n")
    if lines[-1] == b"":
        lines.pop()
    return b"".join((b"." + line if line.startswith(b".") else line) + b"\r\n" for line in lines) + b".\r\n"


def test_random_texts_and_chunkings_match_the_line_by_line_reference() -> None:
    rng = random.Random(1939)
    for _ in range(3000):
        stored = bytes(rng.choice(b"a..\r\n\r\n\n\r") for _ in range(rng.randrange(0, 40)))
        if rng.random() < 0.5:  # half of them clean CRLF text, as the store holds
            stored = stored.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")
        expected = _reference_wire(stored)
        assert encode_body(stored) == expected, stored
        assert _chunked(stored, rng.randrange(1, 12)) == expected, stored
