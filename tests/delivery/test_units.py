"""Pure functions: retry schedule, transport map, MX ordering, settings errors, reply parsing."""

from __future__ import annotations

import random

import pytest

from services.delivery.config import DeliverySettings
from services.delivery.consumer import count_received
from services.delivery.mx import MailHost, order_mx
from services.delivery.remote import _enhanced
from services.delivery.retry import delay_for, expired, parse_schedule
from services.delivery.transport_map import Route, lookup, parse_route, parse_transport_map
from shared.errors import ConfigError
from shared.netaddr import HostPort
from shared.settings import load_settings


def test_schedule_units_and_repeating_last_step() -> None:
    schedule = parse_schedule("30s, 5m,1h,2d")
    assert schedule == (30, 300, 3600, 172800)
    assert [delay_for(schedule, n) for n in (1, 2, 4, 5, 40)] == [30, 300, 172800, 172800, 172800]
    assert expired(0, 5 * 86400, 5 * 86400) and not expired(0, 100, 5 * 86400)
    for bad in ("", "1x", "0s", "1.5s", "-1m"):
        with pytest.raises(ValueError):
            parse_schedule(bad)


def test_default_settings() -> None:
    settings = load_settings(DeliverySettings)
    assert settings.retry_schedule == (60, 300, 900, 1800, 3600, 7200, 14400)
    assert settings.max_queue_lifetime == 5 * 86400
    assert settings.metrics_listen == HostPort("0.0.0.0", 9102)


def test_settings_parse_lists(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POSTROOM_DNS_NAMESERVERS", "127.0.0.1:5353, ::1, [::1]:53")
    monkeypatch.setenv("POSTROOM_TRANSPORT_MAP", "a.test=[10.0.0.1]:2525")
    monkeypatch.setenv("POSTROOM_RELAY_HOST", "[relay.test]:587")
    monkeypatch.setenv("POSTROOM_RELAY_USERNAME", "relayuser")
    monkeypatch.setenv("POSTROOM_RELAY_PASSWORD", "hunter2")
    settings = load_settings(DeliverySettings)
    assert settings.dns_nameservers == (HostPort("127.0.0.1", 5353), HostPort("::1", 53), HostPort("::1", 53))
    assert settings.transport_map == {"a.test": Route("10.0.0.1", 2525, mx=False)}
    assert settings.relay_host == Route("relay.test", 587, mx=False)
    assert "hunter2" not in repr(settings)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("POSTROOM_RETRY_SCHEDULE", "1m,soon"),
        ("POSTROOM_MAX_QUEUE_LIFETIME", "forever"),
        ("POSTROOM_TRANSPORT_MAP", "example.com"),
        ("POSTROOM_RELAY_HOST", "[relay:99999"),
        ("POSTROOM_DNS_NAMESERVERS", "1.2.3.4:0"),
        ("POSTROOM_PREFETCH", "0"),
    ],
)
def test_bad_settings_name_the_variable(monkeypatch: pytest.MonkeyPatch, variable: str, value: str) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError, match=variable):
        load_settings(DeliverySettings)


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


def test_mx_order_sorts_and_shuffles_equal_preferences() -> None:
    records = [(20, "c"), (10, "a"), (10, "b"), (30, "d")]
    orders = {tuple(h.name for h in order_mx(records, random.Random(seed))) for seed in range(40)}
    assert orders == {("a", "b", "c", "d"), ("b", "a", "c", "d")}
    assert order_mx([(5, "x")]) == [MailHost("x", 5)]


def test_enhanced_code_from_reply() -> None:
    assert _enhanced(550, "5.1.1 no such user") == "5.1.1"
    assert _enhanced(450, "5.1.1 mismatched class") == "4.0.0"
    assert _enhanced(554, "go away") == "5.0.0"


def test_count_received_only_in_the_header_section() -> None:
    message = b"Received: a\r\nreceived: b\r\nSubject: x\r\n\r\nReceived: not a header\r\n"
    assert count_received(message) == 2
