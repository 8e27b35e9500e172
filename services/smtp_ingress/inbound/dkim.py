"""DKIM (RFC 6376) and ARC (RFC 8617) verification with dkimpy, run in a worker thread, keys via our resolver."""

from __future__ import annotations

from dataclasses import dataclass

import dkim

from services.smtp_ingress.inbound.dns import Bridge, DnsFailure

# Signatures verified per message at most; more are reported `policy` (a flood of them costs a key lookup each).
MAX_SIGNATURES = 5
# RFC 8301 §3.2: keys shorter than 1024 bits must not be treated as valid.
MIN_KEY_BITS = 1024


@dataclass(frozen=True, slots=True)
class DkimResult:
    result: str  # pass, fail, neutral (unparsable), permerror, temperror, policy (over MAX_SIGNATURES)
    domain: str  # d=, "" when unknown
    selector: str  # s=
    b: str  # the first characters of b= (RFC 6008), to tell signatures apart


def _text(value: object) -> str:
    return value.decode("ascii", "replace") if isinstance(value, bytes) else ""


def verify_dkim(message: bytes, bridge: Bridge, timeout: float) -> list[DkimResult]:
    """A result for each DKIM-Signature, top first; [] when the message has none."""
    verifier = dkim.DKIM(message, minkey=MIN_KEY_BITS, timeout=int(timeout))
    count = sum(1 for name, _ in verifier.headers if name.lower() == b"dkim-signature")
    results = []
    for idx in range(count):
        verifier.domain = verifier.selector = None
        verifier.signature_fields = {}
        if idx >= MAX_SIGNATURES:
            results.append(DkimResult("policy", "", "", ""))
            continue
        try:
            result = "pass" if verifier.verify(idx=idx, dnsfunc=_dnsfunc(bridge)) else "fail"
        except DnsFailure:
            result = "temperror"
        except dkim.ValidationError:
            result = "fail"  # a body hash that does not match, a tag value out of range, an expired signature
        except dkim.DKIMException:
            result = "neutral"  # RFC 8601 §2.7.1: a signature that could not be processed (unparsable tags)
        fields = verifier.signature_fields or {}
        results.append(
            DkimResult(result, _text(fields.get(b"d")), _text(fields.get(b"s")), _text(fields.get(b"b"))[:8])
        )
    return results


def verify_arc(message: bytes, bridge: Bridge, timeout: float) -> str:
    """The ARC chain's validation status: pass, fail, none (no chain) or temperror."""
    try:
        status, _sets, _reason = dkim.ARC(message, minkey=MIN_KEY_BITS, timeout=int(timeout)).verify(
            dnsfunc=_dnsfunc(bridge)
        )
    except DnsFailure:
        return "temperror"
    except dkim.DKIMException:
        return "fail"
    if status == dkim.CV_Pass:
        return "pass"
    if status == dkim.CV_None:
        return "none"
    return "fail"  # CV_Fail, or None: a chain an earlier hop reported broken


def _dnsfunc(bridge: Bridge) -> object:
    def dnsfunc(name: bytes, timeout: float = 5) -> bytes | None:
        return bridge.txt(name.decode("ascii", "replace"))

    return dnsfunc
