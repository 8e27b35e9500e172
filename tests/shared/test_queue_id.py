"""new_queue_id encodes two characters at a time; the ids are those of the one-character-at-a-time encoding."""

from __future__ import annotations

import os
import random

import pytest

from shared import queue_id
from shared.queue_id import is_queue_id, new_queue_id

ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def reference(millis: int, randomness: int) -> str:
    def encode(value: int, length: int) -> str:
        chars = []
        for _ in range(length):
            chars.append(ALPHABET[value & 31])
            value >>= 5
        return "".join(reversed(chars))

    return encode(millis, 10) + encode(randomness, 16)


@pytest.mark.parametrize("seed", range(20))
def test_same_ids_as_the_reference_encoding(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(seed)
    noise = rng.choice([bytes(10), b"\xff" * 10, rng.randbytes(10)])
    monkeypatch.setattr(os, "urandom", lambda n: noise[:n])
    now = rng.choice([0.0, 1_700_000_000.123, 2**48 / 1000 - 0.001, rng.uniform(0, 2**47 / 1000)])
    expected = reference(int(now * 1000), int.from_bytes(noise, "big"))
    assert new_queue_id(now) == expected
    assert is_queue_id(expected)


def test_random_part_comes_from_urandom() -> None:
    assert len({new_queue_id(1.0) for _ in range(100)}) == 100
    assert os.urandom is queue_id.os.urandom  # type: ignore[attr-defined]
