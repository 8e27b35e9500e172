"""Properties of network lists (POSTROOM_TRUSTED_NETWORKS): any text gives networks or a ValueError."""

from __future__ import annotations

import ipaddress

from hypothesis import example, given, settings
from hypothesis import strategies as st

from services.smtp_ingress.config import parse_networks
from services.smtp_ingress.policy import is_trusted

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
network = st.one_of(
    st.builds(
        lambda ip, bits: ipaddress.ip_network(f"{ip}/{bits}", strict=False), st.ip_addresses(v=4), st.integers(0, 32)
    ),
    st.builds(
        lambda ip, bits: ipaddress.ip_network(f"{ip}/{bits}", strict=False), st.ip_addresses(v=6), st.integers(0, 128)
    ),
)
networks = st.lists(network, max_size=5)


@settings(max_examples=500, deadline=None)
@given(text=st.one_of(st.text("0123456789abcdef.:/%, ", max_size=40), st.text(max_size=30)))
@example("10.0.0.1/33")
@example("::1/129")
@example("fe80::1%eth0/64")
@example("10.0.0.0/8,,")
def test_any_text_is_networks_or_a_value_error(text: str) -> None:
    try:
        parsed = parse_networks(text)
    except ValueError as error:
        assert "\n" not in str(error)
        return
    assert len(parsed) == len(text.replace(",", " ").split())


@settings(max_examples=300, deadline=None)
@given(nets=networks, separator=st.sampled_from([",", " ", ", ", " ,\t"]))
def test_printed_networks_read_back(nets: list[Network], separator: str) -> None:
    assert list(parse_networks(separator.join(map(str, nets)))) == nets


@settings(max_examples=300, deadline=None)
@given(nets=networks, address=st.one_of(st.ip_addresses().map(str), st.text(max_size=20)))
def test_trust_is_membership(nets: list[Network], address: str) -> None:
    parsed = parse_networks(",".join(map(str, nets)))
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        assert not is_trusted(address, parsed)
        return
    assert is_trusted(address, parsed) == any(ip.version == n.version and ip in n for n in parsed)
