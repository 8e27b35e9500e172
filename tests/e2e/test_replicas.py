"""Two ingress replicas and two delivery workers on the same broker and Redis share the work under load; one worker
is SIGKILLed mid-flow and every message answered 250 is still stored exactly once."""

from __future__ import annotations

import asyncio
import urllib.request
from collections.abc import Callable

from services.store import Store
from shared.netaddr import parse_host_port
from tests.faults.ledger import Ledger, Sent
from tests.faults.traffic import submit_all
from tests.harness import ServiceProcess
from tests.helpers import free_port, wait_until

DOMAIN = "example.test"
USERS = [f"user{i}@{DOMAIN}" for i in range(4)]
SENDER = "dan@remote.test"
PER_INGRESS = 80


def delivered_by(worker: ServiceProcess) -> float:
    """Recipients this worker delivered so far (its postroom_delivery_attempts_total, outcome delivered)."""
    with urllib.request.urlopen(f"{worker.metrics_url}/metrics", timeout=10) as response:
        lines = response.read().decode().splitlines()
    return sum(
        float(line.rsplit(maxsplit=1)[1])
        for line in lines
        if line.startswith("postroom_delivery_attempts_total{") and 'outcome="delivered"' in line
    )


async def test_two_ingresses_and_two_workers_share_the_load_and_survive_a_kill(
    base_env: dict[str, str], start_service: Callable[..., ServiceProcess], store: Store
) -> None:
    await store.accounts.add_domain(DOMAIN)
    for user in USERS:
        await store.accounts.add_user(user, "replica-password")
    second_listen = f"127.0.0.1:{free_port()}"
    start_service("smtp_ingress")
    start_service(
        "smtp_ingress",
        POSTROOM_SMTP_LISTEN=second_listen,
        POSTROOM_SUBMISSION_LISTEN="",
        POSTROOM_SMTPS_LISTEN="",
    )
    workers = [start_service("delivery"), start_service("delivery")]
    ports = [parse_host_port(base_env["POSTROOM_SMTP_LISTEN"]).port, parse_host_port(second_listen).port]
    ledger = Ledger()
    waves: list[list[Sent]] = [
        [ledger.message(SENDER, USERS[:2] if i % 2 else USERS[2:]) for i in range(PER_INGRESS)] for _ in ports
    ]
    sending = [
        asyncio.create_task(submit_all(wave, port, concurrency=4)) for wave, port in zip(waves, ports, strict=True)
    ]

    async def both_working() -> bool:
        counts = await asyncio.gather(*(asyncio.to_thread(delivered_by, w) for w in workers))
        return all(count > 0 for count in counts) or all(task.done() for task in sending)

    await wait_until(both_working, timeout=120, interval=0.2, what="both workers delivering")
    shared = [await asyncio.to_thread(delivered_by, w) for w in workers]
    workers[0].kill()  # mid-flow: its unacked messages go to the other worker
    await asyncio.gather(*sending)

    async def settled() -> bool:
        await ledger.scan_store(store, USERS)
        return ledger.settled()

    await wait_until(settled, timeout=120, interval=0.5, what="every accepted message stored")
    report = ledger.assert_exactly_once()
    assert all(count > 0 for count in shared), f"one worker did all the work: {shared}"
    assert all(any(sent.accepted for sent in wave) for wave in waves), "an ingress accepted nothing"
    assert report.accepted == 2 * PER_INGRESS and report.lost == 0 and report.duplicated == 0, report.line()
