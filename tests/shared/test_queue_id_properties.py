"""Properties of queue ids: well-formed at any time, sorted by their millisecond, recognised by shape alone."""

from __future__ import annotations

from hypothesis import example, given, settings
from hypothesis import strategies as st

from shared.queue_id import is_queue_id, new_queue_id

ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
millis = st.integers(0, 2**48 - 1)


def time_of(queue_id: str) -> int:
    """The millisecond a queue id was made in (its first 10 characters, Crockford base32)."""
    value = 0
    for char in queue_id[:10]:
        value = value * 32 + ALPHABET.index(char)
    return value


@settings(max_examples=500, deadline=None)
@given(ms=millis)
@example(0)
@example(2**48 - 1)
def test_any_time_gives_a_well_formed_id_that_carries_it(ms: int) -> None:
    queue_id = new_queue_id(ms / 1000 + 0.0001)
    assert is_queue_id(queue_id) and len(queue_id) == 26
    assert time_of(queue_id) == ms


@settings(max_examples=500, deadline=None)
@given(first=millis, second=millis)
def test_ids_sort_by_time(first: int, second: int) -> None:
    a, b = new_queue_id(first / 1000 + 0.0001), new_queue_id(second / 1000 + 0.0001)
    if first < second:
        assert a < b
    elif first > second:
        assert a > b


@settings(max_examples=500, deadline=None)
@given(text=st.one_of(st.text(max_size=30), st.text(ALPHABET + "ILOUilo", min_size=26, max_size=26)))
@example("01ARZ3NDEKTSV4RRFFQ69G5FAV\n")
def test_the_shape_check_takes_any_text(text: str) -> None:
    # Safe to put into key names and headers: exactly 26 characters of the alphabet (no I, L, O, U, no case).
    assert is_queue_id(text) == (len(text) == 26 and all(c in ALPHABET for c in text))
