"""POSTROOM_POP3_WORKERS=2: two pop3 processes share the ports, each serves its own /metrics, the base port's
/readyz speaks for both, the mailbox is one (Redis), SIGTERM stops both, a worker's death stops the rest."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

from services.store import Store
from tests.harness import Harness, ServiceProcess
from tests.helpers import child_pids, free_port_run, http_status, metric_sum, wait_until_sync
from tests.pop3.conftest import PASSWORD, USER, deliver, message

SESSIONS = 40  # enough that the kernel's SO_REUSEPORT hash hands both workers some: (1/2)^39 that it does not
FAST = {"POSTROOM_POP3_AUTH_FAILURE_DELAY": "0", "POSTROOM_POP3_LOCK_TTL": "5s"}


def connections(port: int) -> int:
    """postroom_pop3_connections_total of the worker whose /metrics is on `port`, all listeners together."""
    return int(metric_sum(f"http://127.0.0.1:{port}", "postroom_pop3_connections_total{"))


def two_workers(harness: Harness) -> ServiceProcess:
    """pop3 with two workers, both ready (worker 0's /readyz waits for worker 1's)."""
    metrics = f"127.0.0.1:{free_port_run(2)}"
    service = harness.process("pop3", POSTROOM_POP3_WORKERS="2", POSTROOM_METRICS_LISTEN=metrics, **FAST)
    assert service.proc is not None and len(child_pids(service.proc.pid)) == 2
    return service


def stops_cleanly(service: ServiceProcess) -> bool:
    """SIGTERM to the supervisor: it exits 0 once it has reaped every worker."""
    assert service.proc is not None
    workers = child_pids(service.proc.pid)
    service.proc.send_signal(signal.SIGTERM)
    return service.proc.wait(30) == 0 and not any(Path(f"/proc/{pid}").exists() for pid in workers)


def stat(service: ServiceProcess) -> tuple[int, int]:
    client = service.pop3()
    try:
        client.user(USER)
        client.pass_(PASSWORD)
        return client.stat()
    finally:
        client.quit()


def delete_first(service: ServiceProcess) -> None:
    client = service.pop3()
    client.user(USER)
    client.pass_(PASSWORD)
    client.dele(1)
    client.quit()  # the UPDATE state: the deletion takes effect here


async def test_two_workers_share_the_port_and_one_mailbox(harness: Harness, account: str, store: Store) -> None:
    await deliver(store, message("first"), message("second"))
    service = two_workers(harness)
    sizes = await asyncio.to_thread(lambda: [stat(service) for _ in range(SESSIONS)])
    assert {count for count, _octets in sizes} == {2}
    served = [connections(service.metrics_port), connections(service.metrics_port + 1)]
    assert sum(served) == SESSIONS and min(served) > 0, served
    # Whichever worker deletes, every worker sees the one mailbox in Redis.
    await asyncio.to_thread(delete_first, service)
    assert {count for count, _ in await asyncio.to_thread(lambda: [stat(service) for _ in range(SESSIONS)])} == {1}
    assert len(await store.mailboxes.snapshot(USER)) == 1
    assert await asyncio.to_thread(stops_cleanly, service)


def test_the_base_port_is_ready_only_when_every_worker_is(harness: Harness) -> None:
    service = two_workers(harness)
    assert service.proc is not None
    second = max(child_pids(service.proc.pid))  # started after worker 0
    os.kill(second, signal.SIGSTOP)  # a stalled worker: its /readyz does not answer
    try:
        assert http_status(f"{service.metrics_url}/readyz") == 503
    finally:
        os.kill(second, signal.SIGCONT)
    wait_until_sync(lambda: http_status(f"{service.metrics_url}/readyz") == 200, what="ready again")


def test_a_dead_worker_stops_the_others_and_the_supervisor_fails(harness: Harness) -> None:
    service = two_workers(harness)
    assert service.proc is not None
    workers = child_pids(service.proc.pid)
    os.kill(workers[0], signal.SIGKILL)
    # The orchestrator restarts the whole pod rather than leave it serving with fewer workers than configured.
    assert service.proc.wait(30) == 1
    assert not any(Path(f"/proc/{pid}").exists() for pid in workers)


def test_a_bad_worker_count_is_one_line_and_status_2(harness: Harness) -> None:
    for value in ("0", "65", "many"):
        done = harness.run("pop3", POSTROOM_POP3_WORKERS=value)
        assert done.returncode == 2, done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and "POSTROOM_POP3_WORKERS" in lines[0], done.stderr
