"""The ingress's Prometheus series move with the traffic; gauges exist at zero from the start."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import REGISTRY

from tests.harness import ServiceProcess
from tests.smtp_ingress.conftest import ALICE, SIMPLE_MESSAGE, RunningIngress, read_queue, send


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_counters_and_histograms_follow_a_session(ingress: RunningIngress, namespace: str) -> None:
    names = {
        "connections": ("postroom_smtp_connections_total", {"listener": "smtp", "result": "accepted"}),
        "accepted": ("postroom_smtp_messages_accepted_total", {"listener": "smtp"}),
        "rejected": ("postroom_smtp_rejections_total", {"stage": "rcpt", "code": "550"}),
        "sizes": ("postroom_smtp_message_size_bytes_count", {}),
        "confirms": ("postroom_smtp_publish_confirm_seconds_count", {}),
        "greeting": ("postroom_smtp_commands_total", {"command": "other", "code": "220"}),
        "mail": ("postroom_smtp_commands_total", {"command": "MAIL", "code": "250"}),
        "rcpt_ok": ("postroom_smtp_commands_total", {"command": "RCPT", "code": "250"}),
        "rcpt_refused": ("postroom_smtp_commands_total", {"command": "RCPT", "code": "550"}),
        "data": ("postroom_smtp_commands_total", {"command": "DATA", "code": "354"}),
        "queued": ("postroom_smtp_commands_total", {"command": "DATA", "code": "250"}),
        "quit": ("postroom_smtp_commands_total", {"command": "QUIT", "code": "221"}),
        "unknown": ("postroom_smtp_commands_total", {"command": "other", "code": "500"}),
    }
    before = {key: value(name, **labels) for key, (name, labels) in names.items()}
    with ingress.smtp() as client:
        client.ehlo("client.example.org")
        assert value("postroom_smtp_sessions_active", listener="smtp") >= 1
        client.mail("sender@remote.example")
        client.rcpt("nobody@local.test")
        client.rset()
        assert client.docmd("XYZZY")[0] == 500
        assert send(client, "sender@remote.example", [ALICE], SIMPLE_MESSAGE)[0] == 250
    read_queue(namespace)
    after = {key: value(name, **labels) for key, (name, labels) in names.items()}
    assert {key: after[key] - before[key] for key in names} == {
        "connections": 1,
        "accepted": 1,
        "rejected": 1,
        "sizes": 1,
        "confirms": 1,
        "greeting": 1,
        "mail": 2,
        "rcpt_ok": 1,
        "rcpt_refused": 1,
        "data": 1,
        "queued": 1,
        "quit": 1,
        "unknown": 1,
    }


def test_metrics_endpoint_lists_every_series_at_start(start_service: Callable[..., ServiceProcess]) -> None:
    import urllib.request

    service = start_service("smtp_ingress")
    with urllib.request.urlopen(f"{service.metrics_url}/metrics", timeout=5) as response:
        text = response.read().decode()
    for line in (
        'postroom_smtp_sessions_active{listener="submission"} 0.0',
        'postroom_smtp_connections_total{listener="smtps",result="limit"} 0.0',
        'postroom_smtp_auth_failures_total{mechanism="LOGIN"} 0.0',
        "postroom_smtp_broker_connected 1.0",
        "postroom_smtp_message_size_bytes_count 0.0",
        "postroom_smtp_publish_confirm_seconds_count 0.0",
    ):
        assert line in text, line
