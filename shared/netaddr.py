"""Parsing of `host:port` listen addresses, client IP addresses and network lists (CIDRs) from settings."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# A host name as settings may give it (letters, digits, hyphens, underscores, dots); anything else must be an IP.
_HOST_NAME = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_.-]*[A-Za-z0-9_])?\.?")


@dataclass(frozen=True)
class HostPort:
    """A host and a port; IPv6 hosts are kept without brackets."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_host_port(text: str, default_port: int | None = None) -> HostPort:
    """Parse `host:port`, `[v6]:port` or `:port` (all interfaces); raise ValueError with a readable reason."""
    text = text.strip()
    host, sep, port_text = text.rpartition(":")
    if text.startswith("[") and "]" in text:
        closing = text.index("]")
        host = text[1:closing]
        rest = text[closing + 1 :]
        if rest and not rest.startswith(":"):
            raise ValueError(f"malformed address {text!r}")
        port_text, sep = rest[1:], ":" if rest else ""
    elif not sep or (":" in host):
        if default_port is None:
            raise ValueError(f"{text!r} needs a port (host:port)")
        host, port_text = text, str(default_port)
    # isascii: str.isdigit() is also true for other scripts' digits and for superscripts.
    if not (port_text.isascii() and port_text.isdigit()) or not 0 < int(port_text) < 65536:
        raise ValueError(f"bad port in {text!r}")
    if host and not _valid_host(host):
        raise ValueError(f"bad host in {text!r}")
    return HostPort(host or "0.0.0.0", int(port_text))


def parse_networks(value: Any) -> tuple[Network, ...]:
    """`127.0.0.0/8,::1/128` (comma or space separated, or a sequence); empty means none."""
    sequence = isinstance(value, tuple | list)
    items = [str(v) for v in value] if sequence else str(value or "").replace(",", " ").split()
    try:
        return tuple(ipaddress.ip_network(item, strict=False) for item in items)
    except ValueError as exc:
        raise ValueError(f"bad network: {exc}") from None


def canonical_ip(host: object) -> str:
    """An IP address as text in one spelling: scope id dropped, IPv4-mapped IPv6 unwrapped; other text as it is."""
    text = str(host)
    try:
        address = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return text
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


def in_networks(ip: str, networks: tuple[Network, ...]) -> bool:
    """True when `ip` (an address as text) lies in one of `networks`; False for anything that is not an address."""
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return False
    return any(address.version == net.version and address in net for net in networks)


def _valid_host(host: str) -> bool:
    """An IP address (IPv6 with or without a zone) or a host name; never brackets, spaces or stray colons."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return _HOST_NAME.fullmatch(host) is not None
    return True
