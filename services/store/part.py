"""What every part of the store starts from: the Redis client, the namespace's key names, and replies as text."""

from __future__ import annotations

from typing import Any

from services.store.keys import Keys


class Part:
    """One concern of the store over one namespace; a subclass keeps its Lua scripts and settings beside these."""

    def __init__(self, redis: Any, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys


def as_text(value: Any) -> str:
    """A Redis reply as a str: bytes from a client without decode_responses, anything else through str()."""
    return value.decode() if isinstance(value, bytes) else str(value)
