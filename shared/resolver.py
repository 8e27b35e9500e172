"""An async DNS resolver (dnspython) on the configured servers, or the system's, with one overall timeout."""

from __future__ import annotations

from collections.abc import Sequence

import dns.asyncresolver
import dns.nameserver
import dns.resolver

from shared.netaddr import HostPort

# Answers kept in dnspython's own cache (each for its TTL; NXDOMAIN too), so a client that connects again and
# again is looked up once per TTL.
CACHE_SIZE = 10_000


def make_resolver(nameservers: Sequence[HostPort], timeout: float, cache: bool = True) -> dns.asyncresolver.Resolver:
    """POSTROOM_DNS_NAMESERVERS (empty: /etc/resolv.conf); every lookup ends within `timeout` seconds."""
    resolver = dns.asyncresolver.Resolver(configure=not nameservers)
    if nameservers:
        resolver.nameservers = [dns.nameserver.Do53Nameserver(ns.host, ns.port) for ns in nameservers]
    resolver.lifetime = timeout
    resolver.timeout = timeout
    if cache:
        resolver.cache = dns.resolver.LRUCache(CACHE_SIZE)
    return resolver
