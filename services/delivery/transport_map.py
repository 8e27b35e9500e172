"""`POSTROOM_TRANSPORT_MAP` and `POSTROOM_RELAY_HOST`: next hops that override MX lookup, as in Postfix."""

from __future__ import annotations

from dataclasses import dataclass

SMTP_PORT = 25


@dataclass(frozen=True)
class Route:
    """A next hop. `mx` False means `[host]`: connect to the host itself, no MX lookup (Postfix semantics)."""

    host: str
    port: int = SMTP_PORT
    mx: bool = False

    def __str__(self) -> str:
        host = self.host if self.mx else f"[{self.host}]"
        return f"{host}:{self.port}"


def parse_route(text: str) -> Route:
    """`[host]:port`, `[host]`, `host:port` or `host` (unbracketed names are looked up as MX, like Postfix)."""
    text = text.strip()
    if text.startswith("["):
        closing = text.find("]")
        if closing < 0:
            raise ValueError(f"malformed next hop {text!r}")
        host, rest, mx = text[1:closing], text[closing + 1 :], False
    else:
        host, sep, port_text = text.rpartition(":")
        host, rest, mx = (host, f":{port_text}", True) if sep else (text, "", True)
    if rest and (not rest.startswith(":") or not rest[1:].isdigit() or not 0 < int(rest[1:]) < 65536):
        raise ValueError(f"bad port in next hop {text!r}")
    if not host or any(c.isspace() for c in host):
        raise ValueError(f"bad host in next hop {text!r}")
    return Route(host.lower(), int(rest[1:]) if rest else SMTP_PORT, mx)


def parse_transport_map(text: str) -> dict[str, Route]:
    """`example.com=[10.0.0.5]:2525,.example.org=relay.example.net` → {domain: route}."""
    routes: dict[str, Route] = {}
    for item in text.split(","):
        if not item.strip():
            continue
        domain, sep, hop = item.partition("=")
        domain = domain.strip().lower().rstrip(".")
        if not sep or not domain or not hop.strip():
            raise ValueError(f"transport map entry {item.strip()!r} is not domain=[host]:port")
        routes[domain] = parse_route(hop)
    return routes


def lookup(routes: dict[str, Route], domain: str) -> Route | None:
    """The route for `domain`: an exact entry, else the nearest `.parent` entry (which matches subdomains)."""
    domain = domain.lower().rstrip(".")
    if domain in routes:
        return routes[domain]
    labels = domain.split(".")
    for i in range(1, len(labels)):
        route = routes.get("." + ".".join(labels[i:]))
        if route is not None:
            return route
    return None
