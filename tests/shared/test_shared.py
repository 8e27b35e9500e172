"""Unit tests of the shared library: settings errors, listen addresses, durations, queue ids, envelopes."""

from __future__ import annotations

import pytest

from shared.envelope import Envelope
from shared.errors import ConfigError
from shared.netaddr import HostPort, parse_host_port
from shared.queue_id import is_queue_id, new_queue_id
from shared.settings import CommonSettings, load_settings, parse_duration


def test_bad_setting_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POSTROOM_METRICS_LISTEN", "127.0.0.1:notaport")
    with pytest.raises(ConfigError, match="POSTROOM_METRICS_LISTEN"):
        load_settings(CommonSettings)


def test_empty_listen_disables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POSTROOM_METRICS_LISTEN", "")
    assert load_settings(CommonSettings).metrics_listen is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:25", HostPort("127.0.0.1", 25)),
        (":587", HostPort("0.0.0.0", 587)),
        ("[::1]:110", HostPort("::1", 110)),
        ("mx.example:2525", HostPort("mx.example", 2525)),
    ],
)
def test_parse_host_port(text: str, expected: HostPort) -> None:
    assert parse_host_port(text) == expected


@pytest.mark.parametrize(
    "text", ["127.0.0.1", "host:0", "host:99999", "[::1]x", "host:٣", "[::]]:53", "a b:25", "[a:b]:25"]
)
def test_parse_host_port_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_host_port(text)


def test_parse_host_port_default_port() -> None:
    assert parse_host_port("::1", default_port=53) == HostPort("::1", 53)


@pytest.mark.parametrize(("text", "seconds"), [("90", 90), ("30s", 30), ("5m", 300), ("2h", 7200), ("5d", 432000)])
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "x", "-5m", "0"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_queue_ids_are_unique_and_sort_by_time() -> None:
    ids = [new_queue_id(now=1_700_000_000 + i) for i in range(50)]
    assert ids == sorted(ids)
    assert len(set(ids)) == 50
    assert all(is_queue_id(i) for i in ids)
    assert not is_queue_id("../../etc/passwd")


def test_envelope_round_trips_through_headers() -> None:
    envelope = Envelope(
        queue_id=new_queue_id(),
        mail_from="",
        recipients=("a@example.test", "b@remote.test"),
        attempt=2,
        client_address="192.0.2.1",
        esmtp=("BODY=8BITMIME",),
        last_errors=(("b@remote.test", "451 4.7.1 try later"),),
    )
    assert Envelope.from_headers(envelope.to_headers()) == envelope


def test_envelope_retry_keeps_only_failed_recipients() -> None:
    envelope = Envelope(queue_id=new_queue_id(), mail_from="s@x.test", recipients=("a@x.test", "b@y.test"))
    again = envelope.retry(("b@y.test",), {"b@y.test": "421 busy"})
    assert again.recipients == ("b@y.test",)
    assert again.attempt == 1
    assert again.first_seen == envelope.first_seen
    assert dict(again.last_errors) == {"b@y.test": "421 busy"}


def test_foreign_headers_are_refused() -> None:
    with pytest.raises(ValueError):
        Envelope.from_headers({"x-other": "1"})
