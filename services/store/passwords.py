"""Password hashing with argon2id; verification runs off the event loop and takes as long for unknown users."""

from __future__ import annotations

import asyncio
import os
from concurrent.futures import ThreadPoolExecutor

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

_hasher = PasswordHasher()
# Verified against when the account does not exist, so "no such user" costs the same time as "wrong password".
_DUMMY_HASH = _hasher.hash("postroom-timing-equaliser")


# Each argon2id check takes 64 MiB for its duration; at most one per core runs at once, so a burst of logins costs
# time (queued) rather than memory (bench: 20 parallel POP3 logins peaked at 460 MiB with the default pool).
_argon2_pool = ThreadPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1)), thread_name_prefix="argon2")


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def _verify(stored: str | None, password: str) -> tuple[bool, bool]:
    try:
        ok = _hasher.verify(stored or _DUMMY_HASH, password) and stored is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False, False
    return ok, ok and _hasher.check_needs_rehash(stored or "")


async def verify_password(stored: str | None, password: str) -> tuple[bool, bool]:
    """(valid, needs_rehash); `stored` None means unknown user and is always invalid, after the same work."""
    return await asyncio.get_running_loop().run_in_executor(_argon2_pool, _verify, stored, password)
