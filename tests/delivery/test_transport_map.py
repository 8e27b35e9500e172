"""services/delivery/transport_map.py: parsing routes and looking a domain up."""

from __future__ import annotations

import pytest

from services.delivery.transport_map import Route, lookup, parse_route, parse_transport_map


def test_transport_map_parsing_and_lookup() -> None:
    routes = parse_transport_map("example.com=[mail.example.net]:2525, .corp.test=hub.corp.test,x.test=[10.1.1.1]")
    assert routes["example.com"] == Route("mail.example.net", 2525, mx=False)
    assert routes[".corp.test"] == Route("hub.corp.test", 25, mx=True)
    assert lookup(routes, "EXAMPLE.com") == routes["example.com"]
    assert lookup(routes, "sub.example.com") is None
    assert lookup(routes, "a.b.corp.test") == routes[".corp.test"]
    assert lookup(routes, "corp.test") is None
    assert parse_route("[::1]:2525") == Route("::1", 2525, mx=False)
    with pytest.raises(ValueError):
        parse_transport_map("=x")
