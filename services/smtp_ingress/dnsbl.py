"""DNS blocklists (RFC 5782) asked at connect on port 25: is the client's address listed in a configured zone?

A zone lists an address by answering an A record in 127.0.0.0/8 for the reversed address under the zone
(`2.0.0.127.zen.spamhaus.org`; an IPv6 address as 32 reversed nibbles). Other answers are no listing: Spamhaus
answers 127.255.255.x when it refuses the query (a public resolver, over quota, a bad query), and some resolvers
answer an address of their own for names that do not exist; both are counted as `refused` and ignored. A
timeout or a server failure is `error` and no listing either: a blocklist that is down must not stop mail.

A client's verdict is remembered (a listing for its answer's TTL, no listing for NEGATIVE_TTL; a failed lookup
not at all), so a client that connects again and again costs no lookup, and no parsing, until then.
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
from dataclasses import dataclass

import dns.asyncresolver
import dns.exception
import dns.resolver

from services.smtp_ingress import metrics
from services.smtp_ingress.metrics import DNSBL_RESULTS as RESULTS
from shared.logging import get_logger

log = get_logger(__name__)

# How long a client no zone lists is believed clean (zones publish changes within minutes), and bounds on how long a
# listing answer is kept whatever its TTL says.
NEGATIVE_TTL = 300.0
MIN_TTL, MAX_TTL = 60.0, 3600.0
CACHE_SIZE = 10_000
_LISTING = ipaddress.ip_network("127.0.0.0/8")
_REFUSAL = ipaddress.ip_network("127.255.255.0/24")


def reversed_name(ip: str) -> str | None:
    """The query name of an address without the zone: `2.0.0.127`, or 32 dotted nibbles for IPv6; None when the
    text is no IP address."""
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if isinstance(address, ipaddress.IPv4Address):
        return ".".join(reversed(str(address).split(".")))
    return ".".join(reversed(address.exploded.replace(":", "")))


def classify(addresses: list[str]) -> str:
    """`listed` when an answer is in 127.0.0.0/8 outside 127.255.255.0/24, else `refused`."""
    for text in addresses:
        try:
            address = ipaddress.ip_address(text)
        except ValueError:
            continue
        if address in _LISTING and address not in _REFUSAL:
            return "listed"
    return "refused"


@dataclass(frozen=True)
class Listing:
    zone: str
    answers: tuple[str, ...]
    ttl: float = MIN_TTL


class _Failed(Exception):
    """A zone that could not say (timeout, SERVFAIL): the verdict is not remembered."""


class Blocklists:
    """Asks every zone at once; the first zone (in the configured order) that lists the client wins."""

    def __init__(self, zones: tuple[str, ...], resolver: dns.asyncresolver.Resolver) -> None:
        self.zones = zones
        self.resolver = resolver
        self._cache: dict[str, tuple[float, Listing | None]] = {}
        self._series = {(zone, result): metrics.DNSBL.labels(zone, result) for zone in zones for result in RESULTS}

    async def listing(self, client_ip: str) -> Listing | None:
        now = time.monotonic()
        cached = self._cache.get(client_ip)
        if cached is not None and cached[0] > now:
            return cached[1]
        name = reversed_name(client_ip)
        if name is None or not self.zones:
            return None
        results = await asyncio.gather(*(self._ask(name, zone) for zone in self.zones), return_exceptions=True)
        found = next((r for r in results if isinstance(r, Listing)), None)
        if found is not None:
            log.info("dnsbl listed", client=client_ip, zone=found.zone, answers=",".join(found.answers))
        if not any(isinstance(r, BaseException) for r in results):
            if len(self._cache) >= CACHE_SIZE:
                self._cache.clear()  # bounded: many distinct clients are just looked up again
            ttl = NEGATIVE_TTL if found is None else found.ttl
            self._cache[client_ip] = (now + ttl, found)
        return found

    async def _ask(self, name: str, zone: str) -> Listing | None:
        """The listing of one zone; None when it does not list the address; _Failed when it could not say."""
        try:
            answer = await self.resolver.resolve(f"{name}.{zone}.", "A", search=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            self._series[(zone, "clean")].inc()
            return None
        except (dns.exception.DNSException, OSError) as exc:
            self._series[(zone, "error")].inc()
            log.info("dnsbl lookup failed", zone=zone, error=f"{type(exc).__name__}: {exc}")
            raise _Failed(zone) from None
        answers = tuple(str(record) for record in answer)
        result = classify(list(answers))
        self._series[(zone, result)].inc()
        if result != "listed":
            log.info("dnsbl refused the query", zone=zone, answers=",".join(answers))
            return None
        ttl = float(answer.rrset.ttl) if answer.rrset is not None else MIN_TTL
        return Listing(zone, answers, min(MAX_TTL, max(MIN_TTL, ttl)))
