"""Properties of the POP3 body encoder (RETR/TOP): chunking never matters, TOP is a prefix, nothing ends early."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from services.pop3.response import BodyEncoder, encode_body
from services.smtp_ingress.data import END
from tests.shared.test_dotstuff_properties import body, cuts, receive, split_at

messages = st.builds(lambda head, text: head + b"\r\n\r\n" + text, body, body) | body


def encode_in(chunks: list[bytes], top_lines: int | None) -> bytes:
    encoder = BodyEncoder(top_lines)
    wire = b""
    for chunk in chunks:
        if encoder.done:
            break
        wire += encoder.feed(chunk)
    return wire + encoder.finish()


@settings(max_examples=300, deadline=None)
@given(message=messages, cuts=cuts, top_lines=st.one_of(st.none(), st.integers(0, 5)))
def test_any_chunking_gives_the_same_body(message: bytes, cuts: list[int], top_lines: int | None) -> None:
    wire = encode_in(split_at(message, cuts), top_lines)
    assert wire == encode_body(message, top_lines)
    assert (b"\r\n" + wire).find(END) == len(wire) + 2 - len(END)  # the dot line ends it, nothing before


@settings(max_examples=300, deadline=None)
@given(message=messages, top_lines=st.integers(0, 5))
def test_top_is_the_head_of_retr(message: bytes, top_lines: int) -> None:
    whole, _ = receive(encode_body(message))
    top, _ = receive(encode_body(message, top_lines))
    assert whole.startswith(top)
    # The headers and the blank line after them (the first empty line), then at most `top_lines` body lines.
    blank = whole.find(b"\r\n\r\n")
    head_end = 2 if whole.startswith(b"\r\n") else blank + 4 if blank >= 0 else len(whole)
    if head_end:
        assert top.startswith(whole[:head_end])
        assert top[head_end:].count(b"\r\n") == min(top_lines, whole[head_end:].count(b"\r\n"))
