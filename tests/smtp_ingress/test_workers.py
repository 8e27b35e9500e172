"""POSTROOM_SMTP_WORKERS=2: two processes share the SMTP port; each serves its own /metrics; the base port's /readyz
speaks for both; SIGTERM stops both."""

from __future__ import annotations

import json
import os
import signal
import smtplib
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from tests.harness import ServiceProcess
from tests.helpers import child_pids, free_port_run, http_status, metric_sum, wait_until_sync
from tests.smtp_ingress.conftest import BOB, SIMPLE_MESSAGE, read_queue, send

MESSAGES = 12


def accepted_total(port: int) -> float:
    return metric_sum(f"http://127.0.0.1:{port}", "postroom_smtp_messages_accepted_total{")


def readiness(port: int) -> tuple[int, dict[str, bool]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=10) as response:
            return response.status, json.loads(response.read())["checks"]
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())["checks"]


def metrics_ports() -> str:
    """Worker i serves metrics on the base port + i: two free ports in a row, none of which a connect() can take."""
    return f"127.0.0.1:{free_port_run(2)}"


def test_two_workers_share_the_port_and_stop_together(
    start_service: Callable[..., ServiceProcess], base_env: dict[str, str], accounts: None, namespace: str
) -> None:
    service = start_service("smtp_ingress", POSTROOM_SMTP_WORKERS="2", POSTROOM_METRICS_LISTEN=metrics_ports())
    assert service.proc is not None
    workers = child_pids(service.proc.pid)
    assert len(workers) == 2
    # start_service waited for worker 0's /readyz; worker 1 answers 451 until its own broker link is up.
    wait_until_sync(
        lambda: http_status(f"http://127.0.0.1:{service.metrics_port + 1}/readyz") == 200, what="worker 1 ready"
    )
    port = int(base_env["POSTROOM_SMTP_LISTEN"].rsplit(":", 1)[1])
    for _ in range(MESSAGES):
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
            client.ehlo("client.test")
            code, _reply = send(client, "someone@remote.test", [BOB], SIMPLE_MESSAGE)
            assert code == 250
    assert len(read_queue(namespace, MESSAGES)) == MESSAGES
    # Worker i serves /metrics on the metrics port + i; together they count every accepted message.
    second = service.metrics_port + 1
    assert http_status(f"http://127.0.0.1:{second}/readyz") == 200
    assert accepted_total(service.metrics_port) + accepted_total(second) == MESSAGES
    service.proc.send_signal(signal.SIGTERM)
    assert service.proc.wait(30) == 0
    # The supervisor reaped both workers before exiting.
    assert not any(Path(f"/proc/{pid}").exists() for pid in workers)


def test_the_base_port_is_ready_only_when_every_worker_is(
    start_service: Callable[..., ServiceProcess], accounts: None
) -> None:
    service = start_service("smtp_ingress", POSTROOM_SMTP_WORKERS="2", POSTROOM_METRICS_LISTEN=metrics_ports())
    assert service.proc is not None
    first, second = sorted(child_pids(service.proc.pid))
    wait_until_sync(lambda: readiness(service.metrics_port)[0] == 200, what="both workers ready")
    assert readiness(service.metrics_port)[1]["workers"] is True
    # Worker 1 stops answering (a stalled process): the port the orchestrator probes says not ready.
    os.kill(second, signal.SIGSTOP)
    try:
        status, checks = readiness(service.metrics_port)
        assert status == 503
        assert checks == {"amqp": True, "redis": True, "listeners": True, "workers": False}
    finally:
        os.kill(second, signal.SIGCONT)
    wait_until_sync(lambda: readiness(service.metrics_port)[0] == 200, what="ready again")
    service.proc.send_signal(signal.SIGTERM)
    assert service.proc.wait(30) == 0
    assert not Path(f"/proc/{first}").exists()
