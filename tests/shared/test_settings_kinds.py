"""One parser per kind of setting value: every service reads durations, schedules and lists by the same rules."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from services.delivery.config import DeliverySettings
from services.pop3.config import Pop3Settings
from services.smtp_ingress.config import IngressSettings
from services.store.config import StoreSettings
from shared.errors import ConfigError
from shared.netaddr import HostPort
from shared.settings import (
    CommonSettings,
    host_ports_value,
    load_settings,
    optional_duration_value,
    retry_schedule_value,
)
from shared.tls import self_signed_pair
from tests.certs import TestCA


def test_the_store_reads_its_durations_as_seconds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POSTROOM_TRACE_RETENTION", "2d")
    monkeypatch.setenv("POSTROOM_STATS_INTERVAL", "90")
    monkeypatch.setenv("POSTROOM_RETRY_SCHEDULE", "30s,5m")
    settings = load_settings(StoreSettings)
    assert settings.trace_retention == 2 * 86400.0
    assert settings.trace_retention_seconds == 2 * 86400
    assert settings.stats_interval == 90.0
    assert settings.retry_schedule == (30, 300)


@pytest.mark.parametrize("name", ["TRACE_RETENTION", "STATS_INTERVAL"])
def test_a_bad_store_duration_names_its_variable(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    monkeypatch.setenv(f"POSTROOM_{name}", "soon")
    with pytest.raises(ConfigError, match=f"POSTROOM_{name}: bad duration"):
        load_settings(StoreSettings)


def test_the_schedule_of_the_store_and_the_delivery_is_one_value() -> None:
    for text in ("1m, 5m,1h", "60,300,3600"):
        assert load_settings(StoreSettings, retry_schedule=text).retry_schedule == (60, 300, 3600)
        assert load_settings(DeliverySettings, retry_schedule=text).retry_schedule == (60, 300, 3600)
    assert retry_schedule_value((60, 300)) == (60, 300)
    with pytest.raises(ValueError, match="whole number"):
        retry_schedule_value("1.5s")


def test_an_optional_duration_is_none_when_unset() -> None:
    assert optional_duration_value(None) is None
    assert optional_duration_value("  ") is None
    assert optional_duration_value("4h") == 4 * 3600.0
    with pytest.raises(ValueError):
        optional_duration_value("0")


def test_a_host_port_list_takes_the_default_port() -> None:
    assert host_ports_value("10.0.0.1, [::1]:5353", 53) == (HostPort("10.0.0.1", 53), HostPort("::1", 5353))
    assert host_ports_value(("a.test:25",), 53) == (HostPort("a.test", 25),)
    assert host_ports_value("", 53) == ()


@pytest.mark.parametrize("cls", [IngressSettings, Pop3Settings])
@pytest.mark.parametrize("half", ["tls_cert", "tls_key"])
def test_every_listener_refuses_half_a_tls_pair(cls: type[CommonSettings], half: str) -> None:
    with pytest.raises(ConfigError, match="POSTROOM_TLS_CERT/POSTROOM_TLS_KEY: set both or neither") as error:
        load_settings(cls, **{half: "/etc/postroom/tls/half.pem"})
    assert "\n" not in str(error.value)


def test_an_unreadable_pair_is_a_config_error(tmp_path: Path) -> None:
    settings = load_settings(Pop3Settings, tls_cert=str(tmp_path / "no.crt"), tls_key=str(tmp_path / "no.key"))
    with pytest.raises(ConfigError, match="cannot load the certificate and key"):
        settings.listener_tls("pop3.test")
    cert, key = self_signed_pair("pop3.test", tmp_path)
    served = load_settings(IngressSettings, tls_cert=str(cert), tls_key=str(key)).listener_tls("smtp.test")
    assert served.minimum_version == ssl.TLSVersion.TLSv1_2


def test_a_renamed_setting_is_read_under_its_old_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POSTROOM_PREFETCH", "7")
    monkeypatch.setenv("POSTROOM_SMTP_COMMAND_TIMEOUT", "42s")
    settings = load_settings(DeliverySettings)
    assert settings.delivery_prefetch == 7 and settings.relay_command_timeout == 42.0
    assert set(settings.old_names_used) == {
        ("POSTROOM_PREFETCH", "POSTROOM_DELIVERY_PREFETCH"),
        ("POSTROOM_SMTP_COMMAND_TIMEOUT", "POSTROOM_RELAY_COMMAND_TIMEOUT"),
    }
    # The ingress's own POSTROOM_SMTP_COMMAND_TIMEOUT is untouched by the delivery's rename.
    assert load_settings(IngressSettings).smtp_command_timeout == 42.0


def test_the_new_name_wins_and_a_bad_old_value_names_the_old_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POSTROOM_PREFETCH", "7")
    monkeypatch.setenv("POSTROOM_DELIVERY_PREFETCH", "9")
    assert load_settings(DeliverySettings).delivery_prefetch == 9
    assert load_settings(DeliverySettings, delivery_prefetch=11).delivery_prefetch == 11
    monkeypatch.delenv("POSTROOM_DELIVERY_PREFETCH")
    monkeypatch.setenv("POSTROOM_PREFETCH", "0")
    with pytest.raises(ConfigError, match=r"^POSTROOM_PREFETCH: "):
        load_settings(DeliverySettings)


def test_the_delivery_reads_its_outbound_ca_file_under_the_old_name(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """POSTROOM_TLS_CA_FILE sat beside the listeners' POSTROOM_TLS_CERT/KEY: it is POSTROOM_DELIVERY_TLS_CA_FILE."""
    ca = TestCA(tmp_path)
    monkeypatch.setenv("POSTROOM_TLS_CA_FILE", str(ca.ca_file))
    settings = load_settings(DeliverySettings)
    assert settings.delivery_tls_ca_file == str(ca.ca_file) and settings.relay_tls_ca_file is None
    assert settings.old_names_used == (("POSTROOM_TLS_CA_FILE", "POSTROOM_DELIVERY_TLS_CA_FILE"),)
    monkeypatch.setenv("POSTROOM_TLS_CA_FILE", str(tmp_path / "missing.pem"))
    with pytest.raises(ConfigError, match=r"^POSTROOM_TLS_CA_FILE: .*missing\.pem"):
        load_settings(DeliverySettings)
    monkeypatch.setenv("POSTROOM_DELIVERY_TLS_CA_FILE", str(ca.ca_file))
    assert load_settings(DeliverySettings).delivery_tls_ca_file == str(ca.ca_file)


def test_no_old_name_is_a_current_name() -> None:
    """An old name that some service still reads as its own would be renamed under that service's feet."""
    for cls in (IngressSettings, DeliverySettings, Pop3Settings, StoreSettings):
        for old, field in cls.renamed.items():
            assert field in cls.model_fields, (old, field)
            assert old.removeprefix("POSTROOM_").lower() not in cls.model_fields, old


@pytest.mark.parametrize(("cls", "prefix"), [(IngressSettings, "smtp"), (Pop3Settings, "pop3")])
def test_both_protocols_read_the_login_delays_alike(cls: type[CommonSettings], prefix: str) -> None:
    """One throttle (services/store/throttle.py) serves both: a first delay of 0 turns it off, the cap is a duration."""
    assert getattr(load_settings(cls, **{f"{prefix}_auth_failure_delay": "0"}), f"{prefix}_auth_failure_delay") == 0
    with pytest.raises(ConfigError, match=f"POSTROOM_{prefix.upper()}_AUTH_FAILURE_DELAY_MAX"):
        load_settings(cls, **{f"{prefix}_auth_failure_delay_max": "0"})
