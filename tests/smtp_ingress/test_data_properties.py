"""Properties of the DATA decoder over arbitrary bytes: splits do not matter, the end is CRLF.CRLF, no smuggling."""

from __future__ import annotations

from hypothesis import example, given, settings
from hypothesis import strategies as st

from services.smtp_ingress.data import END, TOO_LONG, DataDecoder
from shared.dotstuff import DotStuffer, LineEnds
from tests.smtp_ingress.test_data import aiosmtpd_reading, split_at

# Bytes that matter to the decoder, mixed with arbitrary ones, so that ends, fake ends and stuffing are common.
PIECES = [b"\r", b"\n", b".", b"\r\n", b"\r\n.", b"..", b"\r\n.\r", b"\n.\n", b"\r.\r\n", b"\r\n.\r\n", b"x" * 600]
stream = st.lists(st.one_of(st.sampled_from(PIECES), st.binary(max_size=12)), max_size=40).map(b"".join)
cuts = st.lists(st.integers(0, 2000), max_size=16)
size_limit = st.one_of(st.none(), st.integers(1, 3000))


def run(chunks: list[bytes], limit: int | None) -> tuple[bool, str | None, bytes, bytes, int]:
    """Feed chunks until the end: (done, problem, text, what came after the end, size)."""
    out: list[bytes] = []
    decoder = DataDecoder(limit, out.append)
    rest = b""
    for index, chunk in enumerate(chunks):
        rest = decoder.feed(chunk)
        if decoder.done:
            rest += b"".join(chunks[index + 1 :])
            break
    return decoder.done, decoder.problem, b"".join(out), rest, decoder.size


@settings(max_examples=400, deadline=None)
@given(data=stream, cuts=cuts, limit=size_limit)
@example(b"\r\n.\r\n", [1, 2, 3, 4], None)
@example(b".\r\n", [1], None)
@example(b"x" * 1200 + END, [800], 700)  # the limit is crossed in a line the first chunk leaves open
@example(b"a\r\n" + b"x" * 1200 + END, [500], 300)
def test_any_split_decodes_as_one_chunk_does(data: bytes, cuts: list[int], limit: int | None) -> None:
    done, problem, text, rest, size = run(split_at(data, cuts), limit)
    whole = run([data], limit)
    assert (done, problem, rest, size) == (whole[0], whole[1], whole[3], whole[4])
    if done and problem is None:
        assert text == whole[2]  # (with a problem the text is thrown away, and the session answers 5xx)


@settings(max_examples=400, deadline=None)
@given(data=stream, cuts=cuts)
def test_the_end_is_the_first_crlf_dot_crlf_and_nothing_else(data: bytes, cuts: list[int]) -> None:
    # The data begins at the start of a line, as if after a CRLF (the DATA command's): a leading ".\r\n" ends it.
    end = (b"\r\n" + data).find(END)
    done, problem, text, rest, _ = run(split_at(data, cuts), None)
    assert done == (end >= 0)
    if done:
        assert rest == (b"\r\n" + data)[end + len(END) :]
        if problem is None:
            # Same as aiosmtpd's line by line reading of the same bytes.
            assert (text, rest) == aiosmtpd_reading(data)[:2]


@settings(max_examples=400, deadline=None)
@given(data=stream, cuts=cuts)
def test_what_is_queued_cannot_smuggle_an_end_of_data(data: bytes, cuts: list[int]) -> None:
    done, problem, text, _, _ = run(split_at(data + END, cuts), None)
    assert done
    if problem is not None:
        return
    # CRLF line ends only: no bare CR or LF that a sloppy next hop could take for a line end.
    assert b"\r" not in text.replace(b"\r\n", b"") and b"\n" not in text.replace(b"\r\n", b"")
    # Relayed (dot-stuffed) and read back by a receiver like us, it is the same text, and only the last dot line
    # ends it.
    ends, stuffer = LineEnds(), DotStuffer()
    wire = stuffer.feed(ends.feed(text)) + stuffer.feed(ends.finish()) + stuffer.finish()
    assert (b"\r\n" + wire).find(END) == len(wire) - len(END) + 2
    again = run([wire], None)
    assert again[0] and again[3] == b""
    assert again[2] == (text if text.endswith(b"\r\n") or not text else text + b"\r\n")


def test_a_line_too_long_that_crosses_the_size_limit_is_too_long_however_it_is_split() -> None:
    data = b"x" * 1200 + END
    for cut in range(1, len(data)):
        assert run([data[:cut], data[cut:]], 700)[1] == TOO_LONG, cut
