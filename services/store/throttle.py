"""The login throttle of SMTP AUTH and POP3: failed logins counted in Redis per account and per client address.

Every replica of either protocol sees the same counts and slows a guesser down by the same rule.

The rule: the n-th failed login within the window (counting the one being answered) waits `base * 2**(n-1)`,
at most `cap`, where n is the larger of the account's count and the client address's count. A failure is forgotten
`window` seconds after the last one of its key; a successful login clears the account's count (not the address's:
one valid account must not reset the penalty for guessing at others). Only failures wait; a right password is
answered at once.

"The account" is the address as login spells it once normalised (`account_address`): `carol@example.test`,
`" CAROL@Example.Test.. "` and `carol@example.test.` are one account and one counter. "The client address" is an
IPv4 address or the /64 of an IPv6 address (one host usually holds a whole /64).

When Redis cannot count (refusing writes, too slow, unreachable), the throttle fails open but slow: the login is
still checked (a right password still gets in, so nobody is locked out by a store problem), and every failure
waits the full `cap`, which is at least as slow as a guesser would ever be made to wait; each such failure is
counted in `postroom_auth_throttle_errors_total` and logged, so the check is never skipped silently.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
from typing import Any

from prometheus_client import Counter

from services.store.addresses import AddressError, account_address
from services.store.keys import Keys, normalize_address
from services.store.part import Part
from shared.logging import get_logger

log = get_logger(__name__)

# Seconds a failure is remembered after the last failure of its key.
WINDOW = 900
# A throttle round trip that takes longer than this is treated as a Redis failure (fail open, slow).
TIMEOUT = 2.0
# Doubling stops here: base * 2**32 is beyond any cap.
_MAX_DOUBLINGS = 32

ERRORS = Counter(
    "postroom_auth_throttle_errors_total",
    "Login throttle operations Redis could not do (the failure was answered after the maximum delay).",
    ["operation"],
)
for _operation in ("failure", "success"):
    ERRORS.labels(_operation)


def account_subject(login: str) -> str:
    """The throttle's name for the account a login names (one per account, however the login spells it)."""
    try:
        return account_address(login)
    except AddressError:
        # Not an address, so not an account; its own counter (bounded in size) still slows guessing at it.
        return "?" + hashlib.sha256(normalize_address(login).encode("utf-8", "surrogateescape")).hexdigest()[:32]


def client_subject(ip: str) -> str:
    """An IPv4 address as it is, an IPv6 address as its /64, anything else as given."""
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


class LoginThrottle(Part):
    """Counts failed logins in Redis and says how long to wait before answering one (see the module docstring)."""

    def __init__(self, redis: Any, keys: Keys, base: float, cap: float, window: int = WINDOW) -> None:
        super().__init__(redis, keys)
        self.base = base
        self.cap = cap
        self.window = window

    def delay_for(self, failures: int) -> float:
        """The wait for the `failures`-th recent failure (1 for the first)."""
        if failures <= 0 or self.base <= 0:
            return 0.0
        return float(min(self.cap, self.base * 2 ** min(failures - 1, _MAX_DOUBLINGS)))

    def _keys(self, ip: str, login: str) -> list[str]:
        keys = [self.keys.throttle_client(client_subject(ip))] if ip else []
        if login.strip():
            keys.append(self.keys.throttle_account(account_subject(login)))
        return keys

    async def failure(self, ip: str, login: str) -> float:
        """Count a failed login from `ip` for `login`; the seconds to wait before answering it."""
        keys = self._keys(ip, login)
        if not keys:
            return self.delay_for(1)
        try:
            async with asyncio.timeout(TIMEOUT):
                counts = await self._count(keys)
        except Exception as exc:  # Redis refusing writes, unreachable or too slow: fail open, but slow
            ERRORS.labels("failure").inc()
            log.warning("login throttle unavailable", error=f"{type(exc).__name__}: {exc}", delay=self.cap)
            return self.cap if self.base > 0 else 0.0
        return self.delay_for(max(counts))

    async def _count(self, keys: list[str]) -> list[int]:
        # Single-key commands in a non-transactional pipeline: one round trip, and Redis Cluster safe (redis-py's
        # cluster client splits the pipeline per node; no command spans two keys).
        async with self.redis.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.incr(key)
                pipe.expire(key, self.window)
            replies = await pipe.execute()
        return [int(count) for count in replies[::2]]

    async def success(self, login: str) -> None:
        """A right password: forget the account's failures (best effort; a failure here only keeps a count)."""
        try:
            async with asyncio.timeout(TIMEOUT):
                await self.redis.delete(self.keys.throttle_account(account_subject(login)))
        except Exception as exc:
            ERRORS.labels("success").inc()
            log.warning("login throttle unavailable", error=f"{type(exc).__name__}: {exc}")

    async def failures(self, *, ip: str = "", login: str = "") -> int:
        """The recent failures counted for a client address or an account (for tests and operators)."""
        if ip:
            key = self.keys.throttle_client(client_subject(ip))
        else:
            key = self.keys.throttle_account(account_subject(login))
        value = await self.redis.get(key)
        return int(value or 0)
