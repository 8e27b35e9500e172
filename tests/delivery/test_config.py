"""services/delivery/config.py: defaults, list settings, and a bad setting naming its variable."""

from __future__ import annotations

import pytest

from services.delivery.config import DeliverySettings
from services.delivery.transport_map import Route
from shared.errors import ConfigError
from shared.netaddr import HostPort
from shared.settings import load_settings


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
