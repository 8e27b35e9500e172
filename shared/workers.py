"""N processes of one service sharing its ports (SO_REUSEPORT): the supervisor, worker settings, sibling readiness."""

from __future__ import annotations

import dataclasses
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from types import FrameType
from typing import TypeVar

import aiohttp

from shared.errors import ConfigError
from shared.health import ReadinessCheck
from shared.logging import configure_logging, fatal, get_logger
from shared.netaddr import HostPort
from shared.service import Service, run
from shared.settings import CommonSettings, load_settings

log = get_logger(__name__)

WORKER_FLAG = "--worker"
# How long worker 0's /readyz waits for each sibling's answer; a probe's own timeout is usually 1 s or more.
SIBLING_TIMEOUT = 0.5

SettingsT = TypeVar("SettingsT", bound=CommonSettings)


def worker_index(argv: list[str]) -> int | None:
    """`python -m services.<name> --worker N` runs worker N; without the flag the process is the parent."""
    if WORKER_FLAG in argv:
        return int(argv[argv.index(WORKER_FLAG) + 1])
    return None


def supervise(module: str, count: int) -> int:
    """Start `count` workers (`python -m <module> --worker i`), forward SIGTERM/SIGINT to them, and exit when they
    have all exited.

    A worker that dies on its own takes the others down too (exit status 1): the orchestrator restarts the
    whole service rather than leaving it running with fewer workers than configured.
    """
    workers = [subprocess.Popen([sys.executable, "-m", module, WORKER_FLAG, str(index)]) for index in range(count)]
    stopping = False

    def forward(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for worker in workers:
            if worker.poll() is None:
                worker.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    log.info("workers started", count=count, pids=[w.pid for w in workers])
    status = 0
    while any(worker.poll() is None for worker in workers):
        for worker in workers:
            code = worker.poll()
            if code is not None and not stopping:
                log.error("worker exited; stopping the others", pid=worker.pid, status=code)
                status = 1
                forward(signal.SIGTERM, None)
        time.sleep(0.2)
    # Every worker has exited; report the first failure (a clean drain is 0 everywhere).
    for worker in workers:
        if worker.returncode not in (0, -signal.SIGTERM, -signal.SIGINT):
            status = status or (worker.returncode if worker.returncode > 0 else 1)
    return status


def run_workers(module: str, service: Callable[[int], Service[SettingsT]], count: Callable[[SettingsT], int]) -> None:
    """`python -m <module>`: the parent supervises `count(settings)` workers when that is more than one; a worker, or
    a parent with one, runs `service(index)` itself."""
    index = worker_index(sys.argv)
    first = service(index or 0)
    if index is None:
        try:
            settings = load_settings(first.settings)
        except ConfigError as exc:
            fatal(f"configuration error: {exc}")
            sys.exit(2)
        workers = count(settings)
        if workers > 1:
            configure_logging(settings.log_level, settings.log_format, service=first.name)
            sys.exit(supervise(module, workers))
    run(first, lambda: for_worker(load_settings(first.settings), index or 0))


def for_worker(settings: SettingsT, index: int) -> SettingsT:
    """Worker i's settings: its own /metrics on the metrics port + i (counters are per process, each worker its own
    scrape target); worker 0's are the settings as they are."""
    listen = settings.metrics_listen
    if index and listen is not None and listen.port:
        return settings.model_copy(update={"metrics_listen": dataclasses.replace(listen, port=listen.port + index)})
    return settings


def worker_checks(settings: CommonSettings, worker: int, count: int) -> dict[str, ReadinessCheck]:
    """Worker 0's extra readiness check when there are siblings: the base port's /readyz, the one the orchestrator
    probes, speaks for every worker. Nothing for a sibling, a single process, or no metrics port."""
    listen = settings.metrics_listen
    if worker == 0 and count > 1 and listen is not None and listen.port:
        return {"workers": siblings_ready(listen, count)}
    return {}


def siblings_ready(listen: HostPort, count: int) -> ReadinessCheck:
    """Worker 0's readiness check of workers 1..count-1 (each serves /readyz on the metrics port + its index).

    An orchestrator probes one port, worker 0's: without this, a pod would be ready while another worker still
    connects to the broker and answers 451 to the clients the kernel hands it.
    """
    # A wildcard listen address is reached on loopback; a specific one on itself.
    host = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(listen.host, listen.host)
    urls = [f"http://{HostPort(host, listen.port + index)}/readyz" for index in range(1, count)]

    async def check() -> bool:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=SIBLING_TIMEOUT)) as session:
            for url in urls:
                async with session.get(url) as response:
                    if response.status != 200:
                        return False
        return True

    return check
