"""Password hashing with argon2id; verification runs off the event loop and takes as long for unknown users.

New hashes come from argon2-cffi (any parallelism). An argon2id or argon2i check goes to libsodium (PyNaCl), as
Dovecot's do, or to argon2-cffi, whichever costs the host less (services/store/argon2_checkers.py); anything
else (argon2d, or a string longer than libsodium takes) is checked by argon2-cffi.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import nacl.exceptions
import nacl.pwhash.argon2id
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from prometheus_client import Counter
from pydantic import Field, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.store.argon2_checkers import Checker, CheckerChoice
from shared.series import create_series
from shared.settings import ENV_PREFIX, delay_value

# OWASP Password Storage Cheat Sheet, argon2id: m=19 MiB, t=2, p=1. argon2-cffi's own default is 64 MiB, t=3, p=4,
# which made one POP3 login (64 MiB for its duration) a bigger peak than a 25 MiB message (docs/performance.md).
DEFAULT_MEMORY_KIB = 19456
DEFAULT_TIME_COST = 2
DEFAULT_PARALLELISM = 1
# Dovecot's auth_cache trade (docs/admin.md "password hashing"): a polling POP3 client pays argon2id once per TTL.
DEFAULT_AUTH_CACHE_TTL = 3600.0
DEFAULT_AUTH_CACHE_SIZE = 100_000


class Argon2Settings(BaseSettings):
    """`POSTROOM_ARGON2_*`, mixed into the settings of every service that hashes or checks passwords."""

    # The same as CommonSettings': pydantic merges the configs of all bases, so a default one here would win.
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    # Before memory: argon2 needs at least 8 KiB per lane, which the memory validator checks.
    argon2_parallelism: int = Field(default=DEFAULT_PARALLELISM, ge=1, le=64)
    argon2_memory_kib: int = Field(default=DEFAULT_MEMORY_KIB, ge=8, le=4 << 20)
    argon2_time_cost: int = Field(default=DEFAULT_TIME_COST, ge=1, le=100)
    # Verified logins kept in process memory (`AuthCache`); a TTL of 0 turns the cache off.
    auth_cache_ttl: float = DEFAULT_AUTH_CACHE_TTL
    auth_cache_size: int = Field(default=DEFAULT_AUTH_CACHE_SIZE, ge=1)
    # Which library checks argon2id and argon2i hashes; `auto` measures both on the first checks.
    argon2_checker: Checker = Checker.AUTO
    # Checks that run at once (each holds memory_kib); 0 is one per core, at most 4.
    argon2_threads: int = Field(default=0, ge=0, le=64)

    @field_validator("auth_cache_ttl", mode="before")
    @classmethod
    def _auth_cache_ttl(cls, value: Any) -> float:
        return delay_value(value)

    @field_validator("argon2_memory_kib")
    @classmethod
    def _memory(cls, value: int, info: ValidationInfo) -> int:
        lanes = info.data.get("argon2_parallelism", DEFAULT_PARALLELISM)
        if value < 8 * lanes:
            raise ValueError(f"must be at least 8 KiB per lane (8 x POSTROOM_ARGON2_PARALLELISM = {8 * lanes})")
        return value


AUTH_CACHE_LOOKUPS = Counter(
    "postroom_auth_cache_lookups_total", "Password checks looked up in the verified-login cache", ["result"]
)
create_series(AUTH_CACHE_LOOKUPS, ("hit", "miss"))


class AuthCache:
    """Recently verified logins: stored hash -> (HMAC of the password under a per-process key, expiry).

    Keyed by the stored hash, so a password change or a rehash makes a new key and the old entry is never read
    again (it ages out of the LRU). Only successes are stored: a wrong password always costs a full argon2 check.
    The MAC, not the password, is held, under a key that never leaves the process.
    """

    def __init__(self, ttl: float, size: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl, self.size, self._clock = ttl, size, clock
        self._key = secrets.token_bytes(32)
        self._entries: OrderedDict[str, tuple[bytes, float]] = OrderedDict()
        # Hits are read on the event loop, stores are made on the argon2 pool's threads.
        self._lock = threading.Lock()

    def _mac(self, password: str) -> bytes:
        return hmac.new(self._key, password.encode("utf-8", "surrogatepass"), hashlib.sha256).digest()

    def hit(self, stored: str, password: str) -> bool:
        if self.ttl <= 0:
            return False
        mac = self._mac(password)
        with self._lock:
            entry = self._entries.get(stored)
            if entry is None:
                return False
            if entry[1] <= self._clock():
                del self._entries[stored]
                return False
            self._entries.move_to_end(stored)
        return hmac.compare_digest(entry[0], mac)

    def store(self, stored: str, password: str) -> None:
        if self.ttl <= 0:
            return
        entry = (self._mac(password), self._clock() + self.ttl)
        with self._lock:
            self._entries[stored] = entry
            self._entries.move_to_end(stored)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)


def _make_hasher(memory_kib: int, time_cost: int, parallelism: int) -> PasswordHasher:
    return PasswordHasher(time_cost=time_cost, memory_cost=memory_kib, parallelism=parallelism)


# Replaced by `configure` at a service's start. Building a hasher costs nothing; hashing does (memory_kib for its
# duration), so nothing is hashed at import: every service imports this module, most never check a password.
_hasher = _make_hasher(DEFAULT_MEMORY_KIB, DEFAULT_TIME_COST, DEFAULT_PARALLELISM)
# Verified against when the account does not exist, so "no such user" costs the same time as "wrong password":
# a PHC string with the configured parameters, a random salt and a random tag, which no password matches (a
# 2^-256 chance) and whose check costs a real one's argon2 work. Nothing is hashed to make it, so it costs neither
# time nor memory_kib of peak RSS; made at the first check, after `configure`.
_DUMMY_HASH: str | None = None
# Replaced by `configure`, with the service's TTL and size.
_auth_cache = AuthCache(DEFAULT_AUTH_CACHE_TTL, DEFAULT_AUTH_CACHE_SIZE)
# Replaced by `configure`, with the service's POSTROOM_ARGON2_CHECKER.
_checker = CheckerChoice(Checker.AUTO)

# What libsodium's crypto_pwhash_str_verify takes: argon2id and argon2i strings of at most 127 bytes.
_SODIUM_PREFIXES = ("$argon2id$", "$argon2i$")
_SODIUM_MAX_HASH = 127


def _pool_size(threads: int) -> int:
    """POSTROOM_ARGON2_THREADS, where 0 means one per core, at most 4."""
    return threads or max(1, min(4, os.cpu_count() or 1))


# Each argon2id check takes memory_kib for its duration; at most one per thread runs at once, so a burst of logins
# costs time (queued) rather than memory (bench: 20 parallel POP3 logins peaked at 460 MiB with the default pool).
_argon2_threads = _pool_size(0)
_argon2_pool = ThreadPoolExecutor(max_workers=_argon2_threads, thread_name_prefix="argon2")


def configure(settings: Argon2Settings) -> None:
    """Hash new passwords (and rehash old ones at login) with these parameters; made once, at a service's start."""
    global _hasher, _DUMMY_HASH, _auth_cache, _checker, _argon2_pool, _argon2_threads
    _hasher = _make_hasher(settings.argon2_memory_kib, settings.argon2_time_cost, settings.argon2_parallelism)
    _DUMMY_HASH = None
    _auth_cache = AuthCache(settings.auth_cache_ttl, settings.auth_cache_size)
    _checker = CheckerChoice(settings.argon2_checker)
    if _pool_size(settings.argon2_threads) != _argon2_threads:
        _argon2_pool.shutdown(wait=False)
        _argon2_threads = _pool_size(settings.argon2_threads)
        _argon2_pool = ThreadPoolExecutor(max_workers=_argon2_threads, thread_name_prefix="argon2")


def hash_password(password: str) -> str:
    return _hasher.hash(password)


async def hash_password_off_loop(password: str) -> str:
    """`hash_password` on the argon2 pool, for callers on the event loop that serves other clients meanwhile."""
    return await asyncio.get_running_loop().run_in_executor(_argon2_pool, hash_password, password)


def _b64(data: bytes) -> str:
    """The PHC string format's base64: standard alphabet, no padding."""
    return base64.b64encode(data).decode("ascii").rstrip("=")


def _dummy_hash() -> str:
    global _DUMMY_HASH
    if _DUMMY_HASH is None:
        h = _hasher
        salt, tag = secrets.token_bytes(h.salt_len), secrets.token_bytes(h.hash_len)
        params = f"m={h.memory_cost},t={h.time_cost},p={h.parallelism}"
        _DUMMY_HASH = f"$argon2id$v=19${params}${_b64(salt)}${_b64(tag)}"
    return _DUMMY_HASH


def _work(stored: str) -> int:
    """Memory KiB x passes of a one-lane PHC string ("$argon2id$v=19$m=19456,t=2,p=1$..."), the unit the checker
    divides a check's CPU by; 0 when it names no cost or more lanes: argon2-cffi computes the lanes of p > 1 on
    threads of its own, whose CPU the checking thread's clock does not see, so such a check is no fair sample."""
    try:
        params = dict(field.split("=", 1) for field in stored.split("$")[3].split(","))
        return int(params["m"]) * int(params["t"]) if params["p"] == "1" else 0
    except (IndexError, KeyError, ValueError):
        return 0


def _sodium_matches(encoded: bytes, password: str) -> bool:
    try:
        return nacl.pwhash.argon2id.verify(encoded, password.encode("utf-8"))
    except nacl.exceptions.InvalidkeyError:
        return False


def _cffi_matches(stored: str, password: str) -> bool:
    try:
        return _hasher.verify(stored, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def _matches(stored: str, password: str) -> bool:
    """True when `password` is the one `stored` was made from; a malformed `stored` is a mismatch."""
    encoded = stored.encode("utf-8", "replace")
    if stored.startswith(_SODIUM_PREFIXES) and len(encoded) <= _SODIUM_MAX_HASH:
        return _checker.run(
            _work(stored),
            {
                Checker.LIBSODIUM: lambda: _sodium_matches(encoded, password),
                Checker.ARGON2_CFFI: lambda: _cffi_matches(stored, password),
            },
        )
    return _cffi_matches(stored, password)


def _verify(stored: str | None, password: str) -> tuple[bool, bool]:
    if stored is None:
        _matches(_dummy_hash(), password)
        return False, False
    ok = _matches(stored, password)
    if ok:
        _auth_cache.store(stored, password)
    return ok, ok and _hasher.check_needs_rehash(stored)


def remember(stored: str, password: str) -> None:
    """Cache `password` as verified for `stored`: a hash just made from it (a rehash at login) needs no check."""
    _auth_cache.store(stored, password)


async def verify_password(stored: str | None, password: str) -> tuple[bool, bool]:
    """(valid, needs_rehash); `stored` None means unknown user and is always invalid, after the same work.

    A login verified within POSTROOM_AUTH_CACHE_TTL is answered from the cache, without argon2. needs_rehash is
    still worked out from the stored hash (it only parses it), so the rehash at the next login still happens.
    """
    if stored is not None and _auth_cache.ttl > 0:
        if _auth_cache.hit(stored, password):
            AUTH_CACHE_LOOKUPS.labels("hit").inc()
            return True, _hasher.check_needs_rehash(stored)
        AUTH_CACHE_LOOKUPS.labels("miss").inc()
    return await asyncio.get_running_loop().run_in_executor(_argon2_pool, _verify, stored, password)
