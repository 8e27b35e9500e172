"""`RCPT TO:<Postmaster>` (RFC 5321 §4.1.1.3), the one recipient without a domain.

It is the postmaster of the primary domain, which every listener accepts without AUTH (§4.5.1 requires that
postmaster mail reaches someone).
"""

from __future__ import annotations

from services.store import Accounts

POSTMASTER = "postmaster"


def is_bare_postmaster(address: str) -> bool:
    """`Postmaster` in any case, with no domain (RFC 5321 §4.1.1.3: it is case-insensitive)."""
    return address.lower() == POSTMASTER


async def primary_domain(configured: str | None, hostname: str, accounts: Accounts) -> str | None:
    """The domain whose postmaster `<Postmaster>` reaches.

    POSTROOM_PRIMARY_DOMAIN when set. Otherwise POSTROOM_HOSTNAME when it is a local domain, else the domain it is
    a host of (`mx.example.com` → `example.com`) when that is local, else the first local domain in alphabetical
    order; None while there is no local domain. Read at each use: domains come and go at run time.
    """
    if configured:
        return configured
    name = hostname.rstrip(".").lower()
    parent = name.partition(".")[2]
    for candidate in (name, parent):
        if candidate and await accounts.is_local_domain(candidate):
            return candidate
    domains = await accounts.list_domains()
    return domains[0] if domains else None


async def postmaster_address(configured: str | None, hostname: str, accounts: Accounts) -> tuple[str | None, str]:
    """(`postmaster@primary` when mail to it is deliverable here, else None; a line saying why, for the logs)."""
    domain = await primary_domain(configured, hostname, accounts)
    if domain is None:
        return None, "no local domain yet: RCPT TO:<Postmaster> is refused until one exists"
    address = f"{POSTMASTER}@{domain}"
    facts = await accounts.lookup(address)
    if not facts.local_domain:
        return None, f"POSTROOM_PRIMARY_DOMAIN {domain} is not a local domain: RCPT TO:<Postmaster> is refused"
    if not facts.deliverable:
        return None, f"{address} does not exist (RFC 5321 §4.5.1 requires it): add it as a user or an alias"
    return address, f"RCPT TO:<Postmaster> is delivered to {address}"
