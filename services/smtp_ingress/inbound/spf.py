"""SPF (RFC 7208) of the MAIL FROM and HELO identities with pyspf, its DNS through our resolver, results cached.

pyspf resolves synchronously through its module-level `spf.DNSLookup(name, qtype, strict, timeout)`, which
`spf.query.dns` calls for every lookup: that function is the seam we ride. Ours answers from the thread-local
`Bridge` of the check running in that worker thread (tests/smtp_ingress/test_inbound_units.py fails when a pyspf
release stops calling it).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import spf as pyspf

from services.smtp_ingress.inbound.dns import Bridge, DnsFailure

RESULTS = ("pass", "fail", "softfail", "neutral", "none", "permerror", "temperror")
# RFC 7208 §4.6.4: at least 20 seconds for a whole check_host().
QUERY_TIME = 20.0

_local = threading.local()


def _lookup(name: str, qtype: str, strict: Any = True, timeout: float = 0) -> list[tuple[tuple[str, str], Any]]:
    """pyspf's DNSLookup contract: ((name, type), value) pairs, [] for NXDOMAIN/no data, TempError on failure."""
    bridge: Bridge = _local.bridge
    try:
        found = bridge.query(name, qtype)
    except DnsFailure as exc:
        raise pyspf.TempError(f"DNS {exc}") from None
    key = (name, qtype)
    values: list[tuple[tuple[str, str], Any]] = []
    for record in found.records:
        if qtype in ("A", "AAAA"):
            values.append((key, record.address))  # type: ignore[attr-defined]
        elif qtype == "MX":
            values.append((key, (record.preference, record.exchange.to_text(True))))  # type: ignore[attr-defined]
        elif qtype == "PTR":
            values.append((key, record.target.to_text(True)))  # type: ignore[attr-defined]
        elif qtype in ("TXT", "SPF"):
            values.append((key, tuple(record.strings)))  # type: ignore[attr-defined]
    return values


pyspf.DNSLookup = _lookup


@dataclass(frozen=True, slots=True)
class SpfResult:
    result: str  # one of RESULTS
    ttl: float  # how long the same inputs give the same result (the shortest TTL consulted); 0: not cacheable


def check_host(bridge: Bridge, ip: str, sender: str, helo: str) -> SpfResult:
    """check_host() in the calling (worker) thread; `sender` empty: the HELO identity (postmaster@helo)."""
    _local.bridge = bridge
    try:
        query = pyspf.query(i=ip, s=sender, h=helo, timeout=QUERY_TIME, querytime=QUERY_TIME)
        result, _code, _explanation = query.check()
    except Exception:  # pyspf raises on inputs it cannot handle (an odd IP or name): no verdict
        return SpfResult("permerror", 0.0)
    finally:
        _local.bridge = None
    result = str(result).lower()
    if result not in RESULTS:
        result = "permerror"
    if result == "temperror" or bridge.failed:
        return SpfResult(result, 0.0)
    ttl = bridge.min_ttl if bridge.min_ttl != float("inf") else 0.0
    return SpfResult(result, ttl)
