"""Internationalised domain names: one spelling per domain (UTS #46 mapping, U-labels) and A-labels for the wire."""

from __future__ import annotations

import functools

import idna

_ACE_PREFIX = "xn--"
_CACHE_SIZE = 4096


def normalize_domain(domain: str) -> str:
    """The one spelling of a domain that keys and comparisons use: lower case, no trailing dot, and for an IDN the
    UTS #46 mapping in U-labels, so that `Bücher.test`, `xn--bcher-kva.test` and `bücher.test` are one domain.

    U-labels rather than A-labels: every ASCII domain, and every IDN stored before this mapping existed as it was
    typed (lower-cased), keeps its spelling and so its keys. A domain that is not a valid IDN (it can still reach
    here: a login, an alias target) stays as written, lower-cased; it then simply matches nothing local.
    """
    domain = domain.lower().rstrip(".")
    if domain.isascii() and _ACE_PREFIX not in domain:
        return domain  # the usual case, without the IDNA machinery
    return _unicode(domain)


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _unicode(domain: str) -> str:
    try:
        return str(idna.decode(idna.encode(domain, uts46=True)))
    except (idna.IDNAError, UnicodeError):
        return domain


def ascii_domain(domain: str) -> str | None:
    """The A-label form of a domain for a peer that does not speak SMTPUTF8 (RFC 5890); None if it has none."""
    if domain.isascii():
        return domain
    try:
        return str(idna.encode(domain.rstrip("."), uts46=True).decode("ascii"))
    except (idna.IDNAError, UnicodeError):
        return None


def ascii_address(address: str) -> str | None:
    """`local@domain` with the domain in A-labels, when the local part is ASCII; None when no ASCII form exists
    (RFC 6531 §3.2: a UTF-8 local part cannot be downgraded)."""
    local, at, domain = address.rpartition("@")
    if not local.isascii():
        return None
    if not at:
        return address if address.isascii() else None
    converted = ascii_domain(domain)
    return None if converted is None else f"{local}@{converted}"
