"""DNS blocklists (RFC 5782) asked at connect on port 25: is the client's address listed in a configured zone?

A zone lists an address by answering an A record in 127.0.0.0/8 for the reversed address under the zone
(`2.0.0.127.zen.spamhaus.org`; an IPv6 address as 32 reversed nibbles). Other answers are no listing: Spamhaus
answers 127.255.255.x when it refuses the query (a public resolver, over quota, a bad query), and some resolvers
answer an address of their own for names that do not exist; both are counted as `refused` and ignored. A
timeout or a server failure is `error` and no listing either: a blocklist that is down must not stop mail.
"""

from __future__ import annotations

import asyncio
import ipaddress
from dataclasses import dataclass

import dns.asyncresolver
import dns.exception
import dns.resolver

from services.smtp_ingress import metrics
from shared.logging import get_logger

log = get_logger(__name__)

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


class Blocklists:
    """Asks every zone at once; the first zone (in the configured order) that lists the client wins."""

    def __init__(self, zones: tuple[str, ...], resolver: dns.asyncresolver.Resolver) -> None:
        self.zones = zones
        self.resolver = resolver
        metrics.initialise_dnsbl(zones)

    async def listing(self, client_ip: str) -> Listing | None:
        name = reversed_name(client_ip)
        if name is None or not self.zones:
            return None
        results = await asyncio.gather(*(self._ask(name, zone) for zone in self.zones))
        for zone, answers in zip(self.zones, results, strict=True):
            if answers is not None:
                log.info("dnsbl listed", client=client_ip, zone=zone, answers=",".join(answers))
                return Listing(zone, answers)
        return None

    async def _ask(self, name: str, zone: str) -> tuple[str, ...] | None:
        """The listing answers of one zone; None when it does not list the address (or could not say)."""
        try:
            answer = await self.resolver.resolve(f"{name}.{zone}.", "A", search=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            metrics.DNSBL.labels(zone, "clean").inc()
            return None
        except (dns.exception.DNSException, OSError) as exc:
            metrics.DNSBL.labels(zone, "error").inc()
            log.info("dnsbl lookup failed", zone=zone, error=f"{type(exc).__name__}: {exc}")
            return None
        answers = tuple(str(record) for record in answer)
        result = classify(list(answers))
        metrics.DNSBL.labels(zone, result).inc()
        if result != "listed":
            log.info("dnsbl refused the query", zone=zone, answers=",".join(answers))
            return None
        return answers
