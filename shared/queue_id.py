"""Sortable unique queue ids (ULID-like: 48-bit millisecond time + 80 random bits, Crockford base32)."""

from __future__ import annotations

import os
import re
import time

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
QUEUE_ID_PATTERN = re.compile(r"^[0-9A-HJKMNP-TV-Z]{26}$")


def _encode(value: int, length: int) -> str:
    chars = []
    for _ in range(length):
        chars.append(_ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def new_queue_id(now: float | None = None) -> str:
    """Return a new 26-character id that sorts by creation time."""
    millis = int((time.time() if now is None else now) * 1000)
    randomness = int.from_bytes(os.urandom(10), "big")
    return _encode(millis, 10) + _encode(randomness, 16)


def is_queue_id(text: str) -> bool:
    """True when text has the shape of a queue id (safe to use in key names and headers)."""
    return bool(QUEUE_ID_PATTERN.match(text))
