"""Rates shared by every replica (send limits per account, port 25 connections per client), kept in Redis by GCRA.

A rate is written `N/PERIOD` (`500/1h`, `60/1m`); a send limit may give recipients apart from messages,
`MESSAGES,RECIPIENTS/PERIOD` (`100,1000/1h`), and otherwise allows as many recipients as messages. The whole
count may be used at once (a burst), then it comes back evenly over the period: `60/1m` allows 60 connections
at once, then one a second. The arithmetic is the RATE_LIMIT script's (lua.py), on Redis's clock.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import NoScriptError

from services.store import lua
from services.store.coalesce import Coalescer
from services.store.keys import Keys
from services.store.part import Part
from shared.settings import parse_duration

# A count beyond this is no limit anyone means; it keeps the script's arithmetic far inside a double's precision.
MAX_COUNT = 10**9
_UNITS = (("d", 86400), ("h", 3600), ("m", 60), ("s", 1))
_RATE = re.compile(r"(\d+)(?:,(\d+))?/(.+)")


@dataclass(frozen=True)
class Rate:
    """`messages` per `period` seconds, and `recipients` per the same period (a send limit; else equal)."""

    messages: int
    period: float
    recipients: int

    def __str__(self) -> str:
        period = _format_period(self.period)
        if self.recipients == self.messages:
            return f"{self.messages}/{period}"
        return f"{self.messages},{self.recipients}/{period}"

    @property
    def period_ms(self) -> int:
        return max(1, round(self.period * 1000))

    def stored(self) -> str:
        """The account hash's `send_limit` form, which the script reads: `messages,recipients/period_ms`."""
        return f"{self.messages},{self.recipients}/{self.period_ms}"

    @classmethod
    def from_stored(cls, text: str) -> Rate | None:
        match = re.fullmatch(r"(\d+),(\d+)/(\d+)", text)
        if match is None:
            return None
        return cls(int(match[1]), int(match[3]) / 1000, int(match[2]))


def _format_period(seconds: float) -> str:
    if seconds == 1:
        return "1s"
    for unit, size in _UNITS:
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def parse_rate(text: str, *, recipients: bool = False) -> Rate:
    """`N/PERIOD`, or with `recipients` also `MESSAGES,RECIPIENTS/PERIOD`; ValueError with a readable reason."""
    spelled = text.strip()
    match = _RATE.fullmatch(spelled.replace(" ", ""))
    if match is None or (match[2] is not None and not recipients):
        form = "MESSAGES/PERIOD or MESSAGES,RECIPIENTS/PERIOD" if recipients else "N/PERIOD"
        raise ValueError(f"bad rate {spelled!r} (use {form}, e.g. 100/1h)")
    messages = int(match[1])
    other = int(match[2]) if match[2] is not None else messages
    if not (0 < messages <= MAX_COUNT and 0 < other <= MAX_COUNT):
        raise ValueError(f"bad rate {spelled!r}: counts are from 1 to {MAX_COUNT}")
    try:
        period = parse_duration(match[3])
    except ValueError as exc:
        raise ValueError(f"bad rate {spelled!r}: {exc}") from None
    if period < 1 or period > 366 * 86400:
        raise ValueError(f"bad rate {spelled!r}: the period is from 1s to 366d")
    return Rate(messages, period, other)


@dataclass(frozen=True)
class Verdict:
    """The outcome of one charge: allowed, or which counter refused it, under which rate, and for how long."""

    allowed: bool
    counter: str = ""  # "messages", "recipients" or "connections"
    rate: Rate | None = None
    retry_after: float = 0.0
    never: bool = False  # the charge alone exceeds the rate: waiting does not help


ALLOWED = Verdict(True)


class RateLimiter(Part):
    """Charges the RATE_LIMIT script: per account (send limits, with its override) and per client address."""

    def __init__(self, redis: Any, keys: Keys, coalescer: Coalescer | None = None) -> None:
        super().__init__(redis, keys)
        # redis-py's cluster pipelines refuse EVALSHA: a cluster client calls the script on its own.
        self.coalescer = None if isinstance(redis, RedisCluster) else coalescer
        self._script = redis.register_script(lua.RATE_LIMIT)

    async def send(self, account: str, recipients: int, default: Rate) -> Verdict:
        """Charge one message to `recipients` recipients to `account` (its override, or `default`)."""
        box = self.keys.mailbox(account)
        keys = [box.send_messages, box.send_recipients, box.account]
        args = [default.period_ms, default.messages, 1, default.recipients, recipients]
        return _verdict(await self._run(keys, args), ("messages", "recipients"))

    async def connection(self, client: str, rate: Rate) -> Verdict:
        """Charge one connection from `client` (an IPv4 address or IPv6 /64)."""
        keys = [self.keys.rate_limit_mx(client)]
        args = [rate.period_ms, rate.messages, 1]
        return _verdict(await self._run(keys, args), ("connections",))

    async def _run(self, keys: list[str], args: list[Any]) -> list[Any]:
        """The script's reply; with a coalescer, its EVALSHA shares a round trip with concurrent callers (a
        connection per message makes one charge per message). The script is loaded once, when Redis lacks it."""
        if self.coalescer is None:
            return list(await self._script(keys=keys, args=args))
        sha = self._script.sha
        [reply] = await self.coalescer.run(lambda pipe: _evalsha(pipe, sha, keys, args))
        if isinstance(reply, NoScriptError):
            reply = await self._script(keys=keys, args=args)
        elif isinstance(reply, Exception):
            raise reply
        return list(reply)

    async def reset_send(self, account: str) -> None:
        """Forget what an account has sent (tests, and an operator who raised a limit and wants it now)."""
        box = self.keys.mailbox(account)
        await self.redis.delete(box.send_messages, box.send_recipients)


def _evalsha(pipe: Any, sha: str, keys: list[str], args: list[Any]) -> int:
    pipe.evalsha(sha, len(keys), *keys, *args)
    return 1


def _verdict(reply: list[Any], counters: tuple[str, ...]) -> Verdict:
    status, counter, limit, period_ms, wait_ms = (int(value) for value in reply)
    if status == 1:
        return ALLOWED
    rate = Rate(limit, period_ms / 1000, limit)
    return Verdict(False, counters[counter - 1], rate, wait_ms / 1000, never=status < 0)
