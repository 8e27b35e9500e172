"""DMARC (RFC 7489): the policy record of the From domain (or its organisational domain), alignment, disposition.

Written on our resolver rather than taken from a library: the lookup is two TXT queries and a tag list, and the
libraries that do it (authheaders, checkdmarc) resolve synchronously on their own resolvers, without our cache.
The organisational domain comes from the Public Suffix List (the `publicsuffixlist` package, which ships it).
"""

from __future__ import annotations

import functools
import random
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from publicsuffixlist import PublicSuffixList

from services.smtp_ingress.inbound.dns import DnsFailure

POLICIES = ("none", "quarantine", "reject")


@functools.cache
def _suffixes() -> PublicSuffixList:
    return PublicSuffixList()  # parses the bundled list once (tens of milliseconds)


@functools.lru_cache(maxsize=4096)
def organisational_domain(domain: str) -> str:
    """RFC 7489 §3.2: the public suffix plus one label; the domain itself when it is a suffix or unknown."""
    return _suffixes().privatesuffix(domain.lower().rstrip(".")) or domain.lower().rstrip(".")


def aligned(identifier: str, from_domain: str, strict: bool) -> bool:
    """RFC 7489 §3.1: strict means the same domain, relaxed the same organisational domain."""
    a, b = identifier.lower().rstrip("."), from_domain.lower().rstrip(".")
    if a == b:
        return True
    return not strict and organisational_domain(a) == organisational_domain(b)


@dataclass(frozen=True, slots=True)
class Record:
    policy: str  # p=, or sp= for a subdomain found through its organisational domain
    strict_dkim: bool
    strict_spf: bool
    percent: int


@functools.lru_cache(maxsize=1024)
def parse_record(text: str, subdomain: bool) -> Record | None:
    """A `v=DMARC1` record; None when it is not one (RFC 7489 §6.6.3: such records are ignored)."""
    tags: dict[str, str] = {}
    for index, part in enumerate(text.split(";")):
        name, sep, value = part.partition("=")
        name, value = name.strip().lower(), value.strip()
        if index == 0:
            if name != "v" or value != "DMARC1":
                return None
            continue
        if sep and name not in tags:
            tags[name] = value
    policy = tags.get("p", "").lower()
    if policy not in POLICIES:
        # §6.6.3: a record with an invalid p= but a valid rua= is treated as p=none; without p=: not a record.
        if "rua" not in tags:
            return None
        policy = "none"
    sub_policy = tags.get("sp", "").lower()
    if subdomain and sub_policy in POLICIES:
        policy = sub_policy
    try:
        percent = max(0, min(100, int(tags.get("pct", "100"))))
    except ValueError:
        percent = 100
    return Record(policy, tags.get("adkim", "r").lower() == "s", tags.get("aspf", "r").lower() == "s", percent)


TxtLookup = Callable[[str], Awaitable[tuple[list[str], float]]]


async def find_record(txt: TxtLookup, from_domain: str) -> Record | None:
    """§6.6.3: _dmarc.<From domain>, then _dmarc.<organisational domain>; DnsFailure when DNS fails."""
    domain = from_domain.lower().rstrip(".")
    record = _one_record(await txt(f"_dmarc.{domain}"), subdomain=False)
    if record is not None:
        return record
    organisational = organisational_domain(domain)
    if organisational == domain:
        return None
    return _one_record(await txt(f"_dmarc.{organisational}"), subdomain=True)


def _one_record(found: tuple[list[str], float], subdomain: bool) -> Record | None:
    records = [r for r in (parse_record(text, subdomain) for text in found[0]) if r is not None]
    return records[0] if len(records) == 1 else None  # §6.6.3: more than one record is no record


@dataclass(frozen=True, slots=True)
class Verdict:
    result: str  # pass, fail, none, temperror, permerror
    policy: str  # the record's policy, "" without one
    disposition: str  # what to do: none, quarantine, reject (after pct=)


async def evaluate(
    txt: TxtLookup,
    from_domain: str | None,
    spf: tuple[str, str] | None,
    dkim_passes: Iterable[str],
    sample: Callable[[], float] = random.random,
) -> Verdict:
    """`spf`: (result, domain) of the identity DMARC uses (MAIL FROM, or HELO for a null sender);
    `dkim_passes`: the d= of each signature that passed. `from_domain` None: the From header is not usable."""
    if from_domain is None:
        return Verdict("permerror", "", "none")
    try:
        record = await find_record(txt, from_domain)
    except DnsFailure:
        return Verdict("temperror", "", "none")
    if record is None:
        return Verdict("none", "", "none")
    dkim_ok = any(aligned(d, from_domain, record.strict_dkim) for d in dkim_passes)
    spf_ok = spf is not None and spf[0] == "pass" and aligned(spf[1], from_domain, record.strict_spf)
    if dkim_ok or spf_ok:
        return Verdict("pass", record.policy, "none")
    disposition = record.policy
    # §6.6.4: pct= applies the policy to that share of failing mail; the rest gets the next policy down.
    if record.percent < 100 and sample() * 100 >= record.percent:
        disposition = {"reject": "quarantine", "quarantine": "none"}.get(disposition, "none")
    return Verdict("fail", record.policy, disposition)
