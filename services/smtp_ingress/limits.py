"""Send limits per authenticated account and the connection rate per client on port 25, as SMTP replies.

The counting is the store's (services/store/ratelimit.py: GCRA in Redis, shared by every replica). When Redis
cannot answer (unreachable, refusing writes, slower than TIMEOUT) the check fails open: the message or session
goes on unlimited, and the miss is logged and counted in `postroom_smtp_limit_errors_total`. Closed would turn a
Redis fault into an outage of all outgoing mail and of the MX for every sender, to guard against an abuse that
needs a stolen password (or a flood) at the same moment; a Redis that is down altogether already stops RCPT, AUTH
and every store, so fail-open only matters for partial faults (a full or read-only Redis, a slow one).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

from services.smtp_ingress import metrics, replies
from services.smtp_ingress.replies import Reply
from services.store.ratelimit import Rate, RateLimiter, Verdict
from services.store.throttle import client_subject
from shared.logging import get_logger

log = get_logger(__name__)

# A limit check that takes longer than this counts as a Redis failure (fail open).
TIMEOUT = 2.0


class Limits:
    """The send limit (at the DATA command, once the recipients are known) and the port 25 connection rate."""

    def __init__(self, limiter: RateLimiter, send_limit: Rate, mx_connection_rate: Rate | None) -> None:
        self.limiter = limiter
        self.send_limit = send_limit
        self.mx_connection_rate = mx_connection_rate

    async def check_send(self, account: str, recipients: int) -> Reply | None:
        """Charge one message to `recipients` recipients to `account`; the refusal when it is over its limit."""
        verdict = await self._charge("send", self.limiter.send(account, recipients, self.send_limit))
        if verdict.allowed or verdict.rate is None:
            return None
        limit = f"send_{verdict.counter}"
        metrics.LIMIT_HITS.labels(limit).inc()
        log.info("send limit", user=account, limit=str(verdict.rate), counter=verdict.counter, recipients=recipients)
        if verdict.never:
            return replies.send_limit_never(str(verdict.rate))
        return replies.send_limit_exceeded(verdict.counter, str(verdict.rate))

    async def check_connection(self, client_ip: str) -> Reply | None:
        """Charge one port 25 connection from `client_ip`; the refusal when its address connects too often."""
        rate = self.mx_connection_rate
        if rate is None:
            return None
        verdict = await self._charge("mx_connections", self.limiter.connection(client_subject(client_ip), rate))
        if verdict.allowed:
            return None
        metrics.LIMIT_HITS.labels("mx_connections").inc()
        log.info("connection rate limit", client=client_ip, limit=str(rate))
        return replies.connection_rate_exceeded(str(rate))

    async def _charge(self, limit: str, charge: Awaitable[Verdict]) -> Verdict:
        try:
            async with asyncio.timeout(TIMEOUT):
                return await charge
        except Exception as exc:  # fail open: see the module docstring
            metrics.LIMIT_ERRORS.labels(limit).inc()
            log.warning("rate limit unavailable", limit=limit, error=f"{type(exc).__name__}: {exc}")
            return Verdict(True)
