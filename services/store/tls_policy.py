"""Outbound TLS policy state kept for every delivery replica: cached MTA-STS policies and TLS-RPT counters."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from services.store.part import Part, as_text

# How long a day's TLS-RPT counters are kept: long enough for the report of that day to be sent after an outage.
TLSRPT_KEEP = 7 * 86400


class TlsPolicies(Part):
    """The MTA-STS policy cache (RFC 8461 §3.3: cached for max_age, shared by every replica) and TLS-RPT counts."""

    async def cached_policy(self, domain: str) -> dict[str, Any] | None:
        raw = await self.redis.get(self.keys.mta_sts(domain))
        if raw is None:
            return None
        try:
            found = json.loads(raw)
        except ValueError:
            return None
        return found if isinstance(found, dict) else None

    async def cache_policy(self, domain: str, policy: Mapping[str, Any], ttl: int) -> None:
        await self.redis.set(self.keys.mta_sts(domain), json.dumps(dict(policy)), ex=max(1, ttl))

    async def count(self, day: str, domain: str, field: str, amount: int = 1) -> None:
        """Add `amount` sessions with result `field` (`<policy>:success` or `<policy>:<failure type>`) to the
        counters of `domain` on `day` (YYYY-MM-DD, UTC)."""
        key = self.keys.tlsrpt(day, domain)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hincrby(key, field, amount)
            pipe.expire(key, TLSRPT_KEEP)
            pipe.sadd(self.keys.tlsrpt_day(day), domain)
            pipe.expire(self.keys.tlsrpt_day(day), TLSRPT_KEEP)
            await pipe.execute()

    async def day(self, day: str) -> dict[str, dict[str, int]]:
        """Every domain's counters of `day`."""
        domains = sorted(as_text(d) for d in await self.redis.smembers(self.keys.tlsrpt_day(day)))
        found: dict[str, dict[str, int]] = {}
        for domain in domains:
            counts = await self.redis.hgetall(self.keys.tlsrpt(day, domain))
            found[domain] = {as_text(k): int(v) for k, v in counts.items()}
        return found

    async def claim_report(self, day: str, owner: str) -> bool:
        """True for the one replica that sends `day`'s reports (the first to ask)."""
        return bool(await self.redis.set(self.keys.tlsrpt_sent(day), owner, nx=True, ex=TLSRPT_KEEP))
