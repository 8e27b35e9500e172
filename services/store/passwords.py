"""Password hashing with argon2id; verification runs off the event loop and takes as long for unknown users."""

from __future__ import annotations

import asyncio
import os
from concurrent.futures import ThreadPoolExecutor

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from pydantic import Field, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.settings import ENV_PREFIX

# OWASP Password Storage Cheat Sheet, argon2id: m=19 MiB, t=2, p=1. argon2-cffi's own default is 64 MiB, t=3, p=4,
# which made one POP3 login (64 MiB for its duration) a bigger peak than a 25 MiB message (docs/performance.md).
DEFAULT_MEMORY_KIB = 19456
DEFAULT_TIME_COST = 2
DEFAULT_PARALLELISM = 1


class Argon2Settings(BaseSettings):
    """`POSTROOM_ARGON2_*`, mixed into the settings of every service that hashes or checks passwords."""

    # The same as CommonSettings': pydantic merges the configs of all bases, so a default one here would win.
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    # Before memory: argon2 needs at least 8 KiB per lane, which the memory validator checks.
    argon2_parallelism: int = Field(default=DEFAULT_PARALLELISM, ge=1, le=64)
    argon2_memory_kib: int = Field(default=DEFAULT_MEMORY_KIB, ge=8, le=4 << 20)
    argon2_time_cost: int = Field(default=DEFAULT_TIME_COST, ge=1, le=100)

    @field_validator("argon2_memory_kib")
    @classmethod
    def _memory(cls, value: int, info: ValidationInfo) -> int:
        lanes = info.data.get("argon2_parallelism", DEFAULT_PARALLELISM)
        if value < 8 * lanes:
            raise ValueError(f"must be at least 8 KiB per lane (8 x POSTROOM_ARGON2_PARALLELISM = {8 * lanes})")
        return value


def _make_hasher(memory_kib: int, time_cost: int, parallelism: int) -> PasswordHasher:
    return PasswordHasher(time_cost=time_cost, memory_cost=memory_kib, parallelism=parallelism)


# Replaced by `configure` at a service's start. Building a hasher costs nothing; hashing does (memory_kib for its
# duration), so nothing is hashed at import: every service imports this module, most never check a password.
_hasher = _make_hasher(DEFAULT_MEMORY_KIB, DEFAULT_TIME_COST, DEFAULT_PARALLELISM)
# Verified against when the account does not exist, so "no such user" costs the same time as "wrong password".
# Made with the configured parameters by the first check of any kind (so that check's extra time says nothing
# about the account), rather than at import or start, where it would cost every service memory_kib of peak RSS.
_DUMMY_HASH: str | None = None

# Each argon2id check takes memory_kib for its duration; at most one per core runs at once, so a burst of logins
# costs time (queued) rather than memory (bench: 20 parallel POP3 logins peaked at 460 MiB with the default pool).
_argon2_pool = ThreadPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1)), thread_name_prefix="argon2")


def configure(settings: Argon2Settings) -> None:
    """Hash new passwords (and rehash old ones at login) with these parameters; made once, at a service's start."""
    global _hasher, _DUMMY_HASH
    _hasher = _make_hasher(settings.argon2_memory_kib, settings.argon2_time_cost, settings.argon2_parallelism)
    _DUMMY_HASH = None


def hash_password(password: str) -> str:
    return _hasher.hash(password)


async def hash_password_off_loop(password: str) -> str:
    """`hash_password` on the argon2 pool, for callers on the event loop that serves other clients meanwhile."""
    return await asyncio.get_running_loop().run_in_executor(_argon2_pool, hash_password, password)


def _dummy_hash() -> str:
    global _DUMMY_HASH
    if _DUMMY_HASH is None:
        _DUMMY_HASH = _hasher.hash("postroom-timing-equaliser")
    return _DUMMY_HASH


def _verify(stored: str | None, password: str) -> tuple[bool, bool]:
    dummy = _dummy_hash()
    try:
        ok = _hasher.verify(stored or dummy, password) and stored is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False, False
    return ok, ok and _hasher.check_needs_rehash(stored or "")


async def verify_password(stored: str | None, password: str) -> tuple[bool, bool]:
    """(valid, needs_rehash); `stored` None means unknown user and is always invalid, after the same work."""
    return await asyncio.get_running_loop().run_in_executor(_argon2_pool, _verify, stored, password)
