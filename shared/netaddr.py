"""Parsing of `host:port` listen addresses and `host[:port]` lists from settings."""

from __future__ import annotations

from dataclasses import dataclass


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
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"bad port in {text!r}")
    return HostPort(host or "0.0.0.0", int(port_text))
