"""Mail routing lookups with dnspython's async resolver: MX in preference order, implicit MX, null MX (RFC 7505)."""

from __future__ import annotations

import asyncio
import ipaddress
import random
from collections.abc import Sequence
from dataclasses import dataclass

import dns.asyncresolver
import dns.exception
import dns.nameserver
import dns.rdata
import dns.resolver

from services.delivery import metrics
from shared.errors import PermanentError, TemporaryError
from shared.netaddr import HostPort


@dataclass(frozen=True)
class MailHost:
    """An MX target (or the domain itself for an implicit MX); `implicit` is the RFC 5321 §5.1 fallback."""

    name: str
    preference: int
    implicit: bool = False


def is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def order_mx(records: Sequence[tuple[int, str]], rng: random.Random | None = None) -> list[MailHost]:
    """Lowest preference first; hosts of equal preference in random order to spread load (RFC 5321 §5.1)."""
    rng = rng or random.Random()
    shuffled = list(records)
    rng.shuffle(shuffled)
    return [MailHost(name, pref) for pref, name in sorted(shuffled, key=lambda record: record[0])]


class MailResolver:
    """Resolves where mail for a domain goes; failures are TemporaryError (retry) or PermanentError (bounce)."""

    def __init__(self, nameservers: Sequence[HostPort], timeout: float) -> None:
        self.resolver = dns.asyncresolver.Resolver(configure=not nameservers)
        if nameservers:
            self.resolver.nameservers = [dns.nameserver.Do53Nameserver(ns.host, ns.port) for ns in nameservers]
        self.resolver.lifetime = timeout
        self.resolver.timeout = timeout

    async def _query(self, name: str, rtype: str) -> list[dns.rdata.Rdata] | None:
        """Records of `rtype`; [] when the name exists without them; None for NXDOMAIN; TemporaryError otherwise."""
        try:
            answer = await self.resolver.resolve(name, rtype, search=False)
        except dns.resolver.NXDOMAIN:
            metrics.DNS_LOOKUPS.labels(rtype, "nxdomain").inc()
            return None
        except dns.resolver.NoAnswer:
            metrics.DNS_LOOKUPS.labels(rtype, "nodata").inc()
            return []
        except dns.exception.Timeout:
            metrics.DNS_LOOKUPS.labels(rtype, "timeout").inc()
            raise TemporaryError(f"DNS timeout looking up {rtype} of {name}", enhanced="4.4.3") from None
        except (dns.resolver.NoNameservers, dns.exception.DNSException) as exc:
            metrics.DNS_LOOKUPS.labels(rtype, "servfail").inc()
            raise TemporaryError(
                f"DNS failure looking up {rtype} of {name}", enhanced="4.4.3", reason=str(exc)
            ) from None
        metrics.DNS_LOOKUPS.labels(rtype, "ok").inc()
        return list(answer)

    async def mail_hosts(self, domain: str) -> list[MailHost]:
        """The hosts to try in order. Raises PermanentError for NXDOMAIN and null MX, TemporaryError for
        SERVFAIL and timeouts."""
        records = await self._query(domain, "MX")
        if records is None:
            raise PermanentError(f"domain {domain} does not exist (NXDOMAIN)", enhanced="5.1.2")
        if not records:
            # RFC 5321 §5.1: no MX records → the domain itself is the mail host (implicit MX).
            return [MailHost(domain, 0, implicit=True)]
        pairs = [(int(r.preference), r.exchange.to_text(omit_final_dot=True)) for r in records]  # type: ignore[attr-defined]
        real = [(pref, name) for pref, name in pairs if name not in ("", ".")]
        if not real:
            # RFC 7505 §3: "MX 0 ." says the domain accepts no mail at all.
            metrics.DNS_LOOKUPS.labels("MX", "null_mx").inc()
            raise PermanentError(f"domain {domain} accepts no mail (null MX)", enhanced="5.1.10")
        return order_mx(real)

    async def addresses(self, host: str) -> list[str] | None:
        """IPv4 then IPv6 addresses of `host`; None when the name does not exist or has neither."""
        if is_ip_literal(host):
            return [host]
        results = await asyncio.gather(self._query(host, "A"), self._query(host, "AAAA"), return_exceptions=True)
        found: list[str] = []
        errors: list[BaseException] = []
        for result in results:
            if isinstance(result, BaseException):
                errors.append(result)
            elif result:
                found.extend(r.to_text() for r in result)
        if found:
            return found
        if errors:
            raise errors[0]
        return None
