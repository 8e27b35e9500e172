"""Sortable unique queue ids (ULID-like: 48-bit millisecond time + 80 random bits, Crockford base32)."""

from __future__ import annotations

import os
import re
import time

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
QUEUE_ID_PATTERN = re.compile(r"[0-9A-HJKMNP-TV-Z]{26}")


# Every pair of characters (10 bits); an id is 13 pairs: the 48-bit time then the 80 random bits, 130 bits in all.
_PAIRS = tuple(high + low for high in _ALPHABET for low in _ALPHABET)
_SHIFTS = tuple(range(120, -1, -10))


def new_queue_id(now: float | None = None) -> str:
    """Return a new 26-character id that sorts by creation time."""
    millis = int((time.time() if now is None else now) * 1000)
    value = (millis << 80) | int.from_bytes(os.urandom(10), "big")
    pairs = _PAIRS
    return "".join([pairs[(value >> shift) & 1023] for shift in _SHIFTS])


def is_queue_id(text: str) -> bool:
    """True when text has the shape of a queue id (safe to use in key names and headers)."""
    # fullmatch: `$` in a match() would also allow a trailing newline.
    return QUEUE_ID_PATTERN.fullmatch(text) is not None
