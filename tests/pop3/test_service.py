"""`python -m services.pop3` as a real process: readiness, metrics, a poplib session, clean shutdown."""

from __future__ import annotations

import asyncio
import socket
import urllib.request
from pathlib import Path

import pytest

from services.store import Store
from shared.tls import self_signed_pair
from tests.harness import Harness, ServiceProcess
from tests.helpers import free_port, http_status, wait_until_sync
from tests.pop3.conftest import PASSWORD, USER, Client, deliver, message

FAST = {"POSTROOM_POP3_AUTH_FAILURE_DELAY": "0", "POSTROOM_POP3_LOCK_TTL": "5s"}


def _metrics(service: ServiceProcess) -> str:
    with urllib.request.urlopen(f"{service.metrics_url}/metrics", timeout=5) as response:
        return str(response.read().decode())


async def test_service_serves_and_reports(harness: Harness, account: str, store: Store) -> None:
    service = harness.process("pop3", **FAST)
    before = _metrics(service)
    for series in (
        "postroom_pop3_sessions_active 0.0",
        'postroom_pop3_commands_total{command="RETR",result="ok"} 0.0',
        'postroom_pop3_auth_failures_total{mechanism="plain"} 0.0',
        "postroom_pop3_messages_deleted_total 0.0",
        "postroom_pop3_sent_bytes_total 0.0",
    ):
        assert series in before
    body = message("via the real process")
    await deliver(store, body)

    def session() -> list[bytes]:
        client = service.pop3()
        client.user(USER)
        client.pass_(PASSWORD)
        lines = client.retr(1)[1]
        client.dele(1)
        client.quit()
        return lines

    lines = await asyncio.to_thread(session)
    assert b"\r\n".join(lines) + b"\r\n" == body
    assert await store.mailboxes.snapshot(USER) == []
    after = _metrics(service)
    assert 'postroom_pop3_commands_total{command="RETR",result="ok"} 1.0' in after
    assert "postroom_pop3_messages_retrieved_total 1.0" in after
    assert "postroom_pop3_messages_deleted_total 1.0" in after
    assert 'postroom_pop3_sessions_closed_total{reason="quit"} 1.0' in after
    sent = next(line for line in after.splitlines() if line.startswith("postroom_pop3_sent_bytes_total "))
    assert float(sent.split()[1]) > len(body)
    assert service.stop() == 0


def test_not_ready_without_redis(harness: Harness) -> None:
    """/readyz is 503 while Redis is unreachable; the process stays up and answers /healthz."""
    service = harness.spawn("pop3", POSTROOM_REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    wait_until_sync(lambda: http_status(f"{service.metrics_url}/healthz") == 200, 30, "healthz")
    assert http_status(f"{service.metrics_url}/readyz") == 503
    assert service.alive()


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("POSTROOM_POP3_LOCK_TTL", "soon"),
        ("POSTROOM_ARGON2_MEMORY_KIB", "lots"),
        ("POSTROOM_ARGON2_TIME_COST", "0"),
        ("POSTROOM_POP3_LISTEN", "127.0.0.1:{busy}"),
        ("POSTROOM_TLS_CERT", "/nonexistent/cert.pem"),
    ],
)
def test_bad_setting_names_the_variable(harness: Harness, variable: str, value: str) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        env = {"POSTROOM_TLS_KEY": "/nonexistent/key.pem"} if variable == "POSTROOM_TLS_CERT" else {}
        env[variable] = value.format(busy=busy.getsockname()[1])
        result = harness.run("pop3", **env)
    assert result.returncode == 2, result.stderr
    assert variable in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("half", ["POSTROOM_TLS_CERT", "POSTROOM_TLS_KEY"])
def test_half_a_tls_pair_stops_the_start_in_one_line(harness: Harness, tmp_path: Path, half: str) -> None:
    """Without this POP3 served a self-signed certificate when the operator forgot one of the two paths."""
    cert, key = self_signed_pair("pop3.postroom.test", tmp_path)
    result = harness.run("pop3", **{half: str(cert if half == "POSTROOM_TLS_CERT" else key)})
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert "POSTROOM_TLS_CERT/POSTROOM_TLS_KEY: set both or neither" in line


async def test_sigterm_closes_sessions_without_deleting(harness: Harness, account: str, store: Store) -> None:
    service = harness.process("pop3", **FAST)
    await deliver(store, message("survives shutdown"))
    client = await Client.connect(service.port("pop3"))
    assert (await client.login()).startswith("+OK")
    assert (await client.cmd("DELE 1")).startswith("+OK")
    assert await asyncio.to_thread(service.stop) == 0
    assert await client.closed()
    assert len(await store.mailboxes.snapshot(USER)) == 1
    assert not await store.redis.exists(store.keys.mailbox(USER).lock)  # released, not left to expire
