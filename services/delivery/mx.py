"""Mail routing lookups (MX, TXT, TLSA) with dnspython's async resolver.

MX in preference order, implicit MX, null MX (RFC 7505), and the TXT and TLSA records of outbound TLS policies, with
whether DNSSEC validated them (the AD bit).
"""

from __future__ import annotations

import asyncio
import ipaddress
import random
from collections.abc import Sequence
from dataclasses import dataclass

import dns.asyncresolver
import dns.exception
import dns.flags
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
    secure: bool = False  # the MX answer was DNSSEC-validated (AD): its host names may carry DANE (RFC 7672 §2.2)


@dataclass(frozen=True)
class Answer:
    """Records of one lookup (None: the name does not exist) and whether the resolver validated them (AD bit)."""

    records: list[dns.rdata.Rdata] | None
    secure: bool


def is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def order_mx(
    records: Sequence[tuple[int, str]], rng: random.Random | None = None, secure: bool = False
) -> list[MailHost]:
    """Lowest preference first; hosts of equal preference in random order to spread load (RFC 5321 §5.1)."""
    rng = rng or random.Random()
    shuffled = list(records)
    rng.shuffle(shuffled)
    return [MailHost(name, pref, secure=secure) for pref, name in sorted(shuffled, key=lambda record: record[0])]


class MailResolver:
    """Resolves where mail for a domain goes; failures are TemporaryError (retry) or PermanentError (bounce)."""

    def __init__(self, nameservers: Sequence[HostPort], timeout: float) -> None:
        self.resolver = dns.asyncresolver.Resolver(configure=not nameservers)
        if nameservers:
            self.resolver.nameservers = [dns.nameserver.Do53Nameserver(ns.host, ns.port) for ns in nameservers]
        self.resolver.lifetime = timeout
        self.resolver.timeout = timeout
        # RFC 6840 §5.7: the AD bit in a query asks a validating resolver to say whether it validated the answer.
        # Postroom trusts that bit only as far as it trusts its resolver (a local validating one, for DANE).
        self.resolver.flags = dns.flags.RD | dns.flags.AD

    async def _query(self, name: str, rtype: str) -> list[dns.rdata.Rdata] | None:
        """Records of `rtype`; [] when the name exists without them; None for NXDOMAIN; TemporaryError otherwise."""
        return (await self.lookup(name, rtype)).records

    async def lookup(self, name: str, rtype: str) -> Answer:
        """`_query` with the AD bit of the answer; a name without such records is secure only when validated."""
        try:
            answer = await self.resolver.resolve(name, rtype, search=False)
        except dns.resolver.NXDOMAIN as exc:
            metrics.DNS_LOOKUPS.labels(rtype, "nxdomain").inc()
            return Answer(None, _validated(exc))
        except dns.resolver.NoAnswer as exc:
            metrics.DNS_LOOKUPS.labels(rtype, "nodata").inc()
            return Answer([], _validated(exc))
        except dns.exception.Timeout:
            metrics.DNS_LOOKUPS.labels(rtype, "timeout").inc()
            raise TemporaryError(f"DNS timeout looking up {rtype} of {name}", enhanced="4.4.3") from None
        except (dns.resolver.NoNameservers, dns.exception.DNSException) as exc:
            metrics.DNS_LOOKUPS.labels(rtype, "servfail").inc()
            raise TemporaryError(
                f"DNS failure looking up {rtype} of {name}", enhanced="4.4.3", reason=str(exc)
            ) from None
        metrics.DNS_LOOKUPS.labels(rtype, "ok").inc()
        return Answer(list(answer), bool(answer.response.flags & dns.flags.AD))

    async def txt(self, name: str) -> list[str]:
        """The TXT records of `name`, each as one string (its character-strings joined, RFC 7208 §3.3)."""
        records = await self._query(name, "TXT") or []
        return [b"".join(r.strings).decode("utf-8", "replace") for r in records]  # type: ignore[attr-defined]

    async def mail_hosts(self, domain: str) -> list[MailHost]:
        """The hosts to try in order. Raises PermanentError for NXDOMAIN and null MX, TemporaryError for
        SERVFAIL and timeouts."""
        found = await self.lookup(domain, "MX")
        records = found.records
        if records is None:
            raise PermanentError(f"domain {domain} does not exist (NXDOMAIN)", enhanced="5.1.2")
        if not records:
            # RFC 5321 §5.1: no MX records → the domain itself is the mail host (implicit MX).
            return [MailHost(domain, 0, implicit=True, secure=found.secure)]
        pairs = [(int(r.preference), r.exchange.to_text(omit_final_dot=True)) for r in records]  # type: ignore[attr-defined]
        real = [(pref, name) for pref, name in pairs if name not in ("", ".")]
        if not real:
            # RFC 7505 §3: "MX 0 ." says the domain accepts no mail at all.
            metrics.DNS_LOOKUPS.labels("MX", "null_mx").inc()
            raise PermanentError(f"domain {domain} accepts no mail (null MX)", enhanced="5.1.10")
        return order_mx(real, secure=found.secure)

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


def _validated(exc: dns.exception.DNSException) -> bool:
    """Whether the resolver validated a negative answer (NXDOMAIN, no data): the AD bit of its response."""
    responses = getattr(exc, "kwargs", {}).get("responses") or {}
    if isinstance(responses, dict):
        return any(bool(r.flags & dns.flags.AD) for r in responses.values())
    response = getattr(exc, "kwargs", {}).get("response")
    return response is not None and bool(response.flags & dns.flags.AD)
