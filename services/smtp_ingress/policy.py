"""Address and relay policy: syntax and length checks on envelope addresses, trusted networks (RFC 5321 §4.5.3.1)."""

from __future__ import annotations

import ipaddress
import re

from services.smtp_ingress import replies
from services.smtp_ingress.replies import Reply
from shared.netaddr import Network, canonical_ip, in_networks

# Which domain an address belongs to is decided by the text after its last `@` and nothing else: a source
# route (`<@a,@b:user@c>`) is parsed and ignored by aiosmtpd as RFC 5321 Appendix C allows, `%` and `!` are
# ordinary local-part characters that never select another host, a quoted local part holding `@` is refused,
# and an address with several unquoted `@` does not parse. None of them is a way to relay.
NULL_SENDER = "<>"
# RFC 5321 §4.5.3.1.1-3 (octets): local part 64, domain 255, path 256 including the angle brackets.
MAX_LOCAL_PART = 64
MAX_DOMAIN = 255
MAX_PATH = 256

_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")
_PLAIN_DOMAIN = re.compile(r"(?:(?!-)[A-Za-z0-9-]{1,63}(?<!-)\.)*(?!-)[A-Za-z0-9-]{1,63}(?<!-)")
_ADDRESS_LITERAL = re.compile(r"^\[(IPv6:[0-9A-Fa-f:.]+|[0-9.]+)\]$")


_CONTROL = re.compile("[\x00-\x1f\x7f\ud800-\udfff]")


def has_control_characters(text: str) -> bool:
    """C0 controls, DEL, and undecodable bytes (surrogate escapes) have no place in a command or address."""
    return _CONTROL.search(text) is not None


def valid_domain(domain: str) -> bool:
    """A dot-separated host name (U-labels allowed, RFC 6531) or an IPv4/IPv6 address literal."""
    # The usual ASCII host name in one regex; anything else (IDN, literals, trailing dots) takes the long way.
    return _PLAIN_DOMAIN.fullmatch(domain) is not None or _valid_domain(domain)


def _valid_domain(domain: str) -> bool:
    if _ADDRESS_LITERAL.match(domain):
        literal = domain[1:-1].removeprefix("IPv6:")
        try:
            ipaddress.ip_address(literal)
        except ValueError:
            return False
        return True
    try:
        ascii_domain = domain.rstrip(".").encode("idna").decode("ascii") if not domain.isascii() else domain
    except UnicodeError:
        return False
    labels = ascii_domain.rstrip(".").split(".")
    return bool(labels) and all(_LABEL.match(label) for label in labels)


def check_address(address: str, *, sender: bool, smtputf8: bool) -> Reply | None:
    """None when the address is acceptable as syntax, else the reply that rejects it."""
    if sender and address == NULL_SENDER:
        return None
    if has_control_characters(address):
        return replies.CONTROL_CHARACTERS
    bad_syntax = replies.BAD_SENDER_SYNTAX if sender else replies.BAD_RECIPIENT_SYNTAX
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain:
        return bad_syntax
    if (
        len(local.encode()) > MAX_LOCAL_PART
        or len(domain.encode()) > MAX_DOMAIN
        or len(address.encode()) + 2 > MAX_PATH
    ):
        return replies.ADDRESS_TOO_LONG
    if local.startswith('"') and "@" in local:
        return replies.QUOTED_LOCAL_PART
    if not local.startswith('"') and "@" in local:
        return bad_syntax
    if not valid_domain(domain):
        return bad_syntax
    if not address.isascii() and not smtputf8:
        return replies.NON_ASCII_WITHOUT_SMTPUTF8
    return None


def split_domain(address: str) -> str:
    """The domain of an address that passed `check_address`, lower-cased, without a trailing dot."""
    return address.rpartition("@")[2].rstrip(".").lower()


def client_ip(peer: object) -> str:
    """The client's IP address from a socket peername, IPv4-mapped IPv6 unwrapped."""
    return canonical_ip(peer[0] if isinstance(peer, tuple) and peer else "")


def is_trusted(ip: str, networks: tuple[Network, ...]) -> bool:
    return in_networks(ip, networks)


def valid_helo(name: str) -> bool:
    """An EHLO/HELO argument we are willing to write into a Received: header (RFC 5321 §4.1.4)."""
    # ASCII only: the header may sit in a message that is not SMTPUTF8.
    return (
        name.isascii()
        and not has_control_characters(name)
        and len(name) <= MAX_DOMAIN
        and valid_domain(name.replace("_", "-"))
    )
