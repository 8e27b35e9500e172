"""DNS of the inbound checks: one cached asyncio resolver, and a bridge for the libraries that resolve synchronously.

The cache is bounded by TTL and size. pyspf and dkimpy resolve synchronously: they run in worker threads and wait on
the event loop's lookups through the bridge.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass

import dns.asyncresolver
import dns.exception
import dns.nameserver
import dns.rdata
import dns.resolver

from shared.netaddr import HostPort


class DnsFailure(Exception):
    """A lookup that timed out or failed (SERVFAIL, no server answered): the check's result is `temperror`."""


@dataclass(frozen=True, slots=True)
class Lookup:
    """The records of one name and type ([] for NXDOMAIN or no data), and how long they may be kept (seconds)."""

    records: list[dns.rdata.Rdata]
    ttl: float
    exists: bool = True  # False: NXDOMAIN


# How long a negative answer without a SOA to say otherwise counts for the result caches (not dnspython's).
NEGATIVE_TTL = 60.0


class InboundResolver:
    """Resolves for the checks; answers (positive and, per the SOA, negative) are kept by dnspython's LRU cache."""

    def __init__(self, nameservers: Sequence[HostPort], timeout: float, cache_size: int) -> None:
        self.resolver = dns.asyncresolver.Resolver(configure=not nameservers)
        if nameservers:
            self.resolver.nameservers = [dns.nameserver.Do53Nameserver(ns.host, ns.port) for ns in nameservers]
        self.resolver.lifetime = timeout
        self.resolver.timeout = timeout
        self.resolver.cache = dns.resolver.LRUCache(cache_size)
        self.timeout = timeout
        self.cache_size = cache_size
        # TXT answers as the checks read them, by name: a hit costs a dict lookup rather than a pass through
        # dnspython's resolution machinery (most of the checks' CPU on a warm cache).
        self._txt: dict[str, tuple[float, list[str]]] = {}

    async def query(self, name: str, rtype: str) -> Lookup:
        try:
            answer = await self.resolver.resolve(name, rtype, search=False, raise_on_no_answer=False)
        except dns.resolver.NXDOMAIN:
            return Lookup([], NEGATIVE_TTL, exists=False)
        except (dns.resolver.NoNameservers, dns.exception.DNSException) as exc:
            # Timeout, SERVFAIL, REFUSED, a name too long: never the sender's fault, never a rejection.
            raise DnsFailure(f"{rtype} {name}: {type(exc).__name__}") from None
        ttl = max(0.0, answer.expiration - time.time())
        if answer.rrset is None:
            return Lookup([], min(ttl, NEGATIVE_TTL) if ttl else NEGATIVE_TTL)
        return Lookup(list(answer.rrset), ttl)

    async def txt(self, name: str) -> tuple[list[str], float]:
        """Each TXT record of `name` as one string (its character-strings joined, RFC 7208 §3.3)."""
        now = time.monotonic()
        hit = self._txt.get(name)
        if hit is not None and hit[0] > now:
            return hit[1], hit[0] - now
        found = await self.query(name, "TXT")
        texts = [b"".join(record.strings).decode("utf-8", "replace") for record in found.records]  # type: ignore[attr-defined]
        if found.ttl > 0:
            if len(self._txt) >= self.cache_size:
                self._txt.clear()  # bounded; the names asked next are simply looked up again
            self._txt[name] = (now + found.ttl, texts)
        return texts, found.ttl

    def bridge(self, loop: asyncio.AbstractEventLoop) -> Bridge:
        return Bridge(self, loop)


class Bridge:
    """Used from a worker thread: each lookup runs on the event loop (the one resolver and cache) while the thread
    waits; it remembers the shortest TTL it saw, so that a result computed from the answers is kept no longer."""

    def __init__(self, resolver: InboundResolver, loop: asyncio.AbstractEventLoop) -> None:
        self.resolver = resolver
        self.loop = loop
        self.min_ttl = float("inf")
        self.failed = False

    def query(self, name: str, rtype: str) -> Lookup:
        future = asyncio.run_coroutine_threadsafe(self.resolver.query(name, rtype), self.loop)
        try:
            found = future.result(self.resolver.timeout + 1)
        except DnsFailure:
            self.failed = True
            raise
        except TimeoutError:
            future.cancel()
            self.failed = True
            raise DnsFailure(f"{rtype} {name}: no answer in time") from None
        self.min_ttl = min(self.min_ttl, found.ttl)
        return found

    def txt(self, name: str) -> bytes | None:
        """dkimpy's `dnsfunc`: the first TXT record of `name`, its strings joined; None when there is none."""
        found = self.query(name, "TXT")
        for record in found.records:
            return b"".join(record.strings)  # type: ignore[attr-defined]
        return None
