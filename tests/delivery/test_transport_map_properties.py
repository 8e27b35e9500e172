"""Properties of POSTROOM_TRANSPORT_MAP and POSTROOM_RELAY_HOST: a route or a ValueError; printed routes read back."""

from __future__ import annotations

from hypothesis import example, given, settings
from hypothesis import strategies as st

from services.delivery.transport_map import Route, lookup, parse_route, parse_transport_map

label = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?", fullmatch=True)
domain = st.lists(label, min_size=1, max_size=4).map(".".join)
host = st.one_of(domain, st.ip_addresses(v=4).map(str), st.ip_addresses(v=6).map(str))
routes = st.builds(Route, host, st.integers(1, 65535), st.booleans()).filter(
    lambda r: r.mx is False or ":" not in r.host
)
hop_text = st.one_of(st.text("[]:0123456789abc.-= ,", max_size=30), st.text(max_size=30))


@settings(max_examples=500, deadline=None)
@given(text=hop_text)
@example("[")
@example("[host]x")
@example("host:")
@example("[::1]:0")
@example("host:٣")
def test_a_next_hop_is_a_route_or_a_value_error(text: str) -> None:
    try:
        route = parse_route(text)
    except ValueError:
        return
    assert route.host and 0 < route.port < 65536


@settings(max_examples=500, deadline=None)
@given(text=st.one_of(hop_text, st.text("a.b=[]:25,. ", max_size=40)))
def test_a_transport_map_is_routes_or_a_value_error(text: str) -> None:
    try:
        table = parse_transport_map(text)
    except ValueError:
        return
    assert all(name and name == name.lower() and not name.endswith(".") for name in table)


@settings(max_examples=300, deadline=None)
@given(route=routes)
def test_a_printed_route_reads_back(route: Route) -> None:
    assert parse_route(str(route)) == route


@settings(max_examples=300, deadline=None)
@given(entries=st.dictionaries(st.one_of(domain, domain.map(".{}".format)), routes, max_size=5), name=domain)
def test_lookup_takes_the_exact_entry_else_the_nearest_parent(entries: dict[str, Route], name: str) -> None:
    table = parse_transport_map(",".join(f"{d}={r}" for d, r in entries.items()))
    assert table == entries
    found = lookup(table, name.upper() + ".")
    if name in entries:
        assert found == entries[name]
        return
    labels = name.split(".")
    parents = [".".join(labels[i:]) for i in range(1, len(labels))]
    nearest = next((entries["." + p] for p in parents if "." + p in entries), None)
    assert found == nearest
