"""Syntax checks for addresses and domains as the store accepts them (RFC 5321 §4.1.2 and §4.5.3.1 limits)."""

from __future__ import annotations

import re

from services.store.idn import normalize_domain
from services.store.keys import normalize_address

_LOCAL_ATOM = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*$")
_DOMAIN_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")


class AddressError(ValueError):
    """The text is not an address or domain we accept; the message says why."""


def validate_domain(domain: str) -> str:
    domain = domain.strip().rstrip(".").lower()
    if not domain or len(domain) > 255:
        raise AddressError(f"bad domain {domain!r}")
    try:
        ascii_domain = domain.encode("idna").decode("ascii")
    except UnicodeError:
        raise AddressError(f"bad domain {domain!r}") from None
    if not all(_DOMAIN_LABEL.match(label) for label in ascii_domain.split(".")):
        raise AddressError(f"bad domain {domain!r}")
    return normalize_domain(domain)


def split_address(address: str) -> tuple[str, str]:
    local, sep, domain = address.rpartition("@")
    if not sep or not local or not domain:
        raise AddressError(f"bad address {address!r}: expected local@domain")
    return local, domain.lower()


def validate_address(address: str) -> str:
    """A dot-atom local part (UTF-8 allowed, RFC 6531) at a valid domain, within RFC 5321 length limits."""
    address = address.strip()
    local, domain = split_address(address)
    try:
        octets = len(address.encode())
    except UnicodeEncodeError:  # undecodable bytes of a command-line argument (surrogate escapes)
        raise AddressError(f"bad address {address!r}: not UTF-8") from None
    if len(local.encode()) > 64 or octets > 254:
        raise AddressError(f"bad address {address!r}: too long")
    if not (_LOCAL_ATOM.match(local) or (not local.isascii() and local.isprintable() and "@" not in local)):
        raise AddressError(f"bad address {address!r}")
    if any(c in local for c in ' "\\<>()[],;:@'):
        raise AddressError(f"bad address {address!r}")
    return f"{local}@{validate_domain(domain)}"


def account_address(login: str) -> str:
    """The account a login names, spelt as its keys are: `" CAROL@Example.Test.. "` is `carol@example.test`.

    What `Accounts.authenticate` looks up, so login, the session that follows it and the login throttle agree on
    which account it is. AddressError when the login is not an address.
    """
    return normalize_address(validate_address(login))
