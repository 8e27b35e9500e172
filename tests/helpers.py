"""Test helpers: free ports, waiting on a condition with a deadline, HTTP status of a health endpoint."""

from __future__ import annotations

import asyncio
import functools
import os
import random
import socket
import ssl
import subprocess
import time
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tests.harness import ServiceProcess as ServiceProcess  # the name's old home: see __getattr__

ROOT = Path(__file__).resolve().parent.parent
AMQP_URL = os.environ.get("POSTROOM_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
REDIS_URL = os.environ.get("POSTROOM_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def client_tls() -> ssl.SSLContext:
    """A client context that accepts the services' self-signed test certificates."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def free_port(host: str = "127.0.0.1") -> int:
    """A port free now, below the kernel's ephemeral range (`free_port_run`)."""
    return free_port_run(1, host)


# Ports handed out come from below the ephemeral range, which outgoing connections take theirs from: one the kernel
# chose for a bind to port 0 could go to any process's connect() (the suite opens thousands, to Redis and RabbitMQ)
# before the service binds it. Each xdist worker takes ports in turn from a slice of its own, so neither two workers
# nor two calls of one test (a service's five listeners) pick the same port before the services bind them;
# processes outside xdist (the benches) share the last slice.
LOWEST_PORT = 20000
PORT_SLICES = 8
_port_cursor = random.randrange(1 << 16)


@functools.cache
def _port_slice() -> tuple[int, int]:
    """(first, size) of this process's slice of the ports below the ephemeral range (read once: neither changes)."""
    with open("/proc/sys/net/ipv4/ip_local_port_range") as ranges:
        ephemeral_low = int(ranges.read().split()[0])
    size = (ephemeral_low - LOWEST_PORT) // PORT_SLICES
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    index = int(worker[2:]) % (PORT_SLICES - 1) if worker[2:].isdigit() else PORT_SLICES - 1
    return LOWEST_PORT + index * size, size


def free_port_run(count: int, host: str = "127.0.0.1") -> int:
    """The first of `count` consecutive ports free now, below the kernel's ephemeral range (the ingress's workers
    listen on a metrics port + i), taken in turn from this process's slice, skipping any that are in use."""
    global _port_cursor
    first_of_slice, size = _port_slice()
    for _ in range(size):
        first = first_of_slice + _port_cursor % (size - count)
        _port_cursor += count
        if all(_port_free(host, first + i) for i in range(count)):
            return first
    raise RuntimeError(f"no {count} consecutive free ports in {first_of_slice}-{first_of_slice + size - 1}")


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


async def wait_until(
    predicate: Callable[[], Awaitable[bool]], timeout: float = 20.0, interval: float = 0.05, what: str = ""
) -> None:
    """Poll an async predicate until it is true; fail the test with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        if await predicate():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        await asyncio.sleep(interval)


def wait_until_sync(predicate: Callable[[], bool], timeout: float = 20.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(0.05)


def http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return 0


def metric_sum(metrics_url: str, prefix: str) -> float:
    """The sum of the samples on `metrics_url`/metrics whose line starts with `prefix` (a family's name and `{`, or
    a name with its labels), 0 when there is none."""
    with urllib.request.urlopen(f"{metrics_url}/metrics", timeout=5) as response:
        text = response.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(prefix))


def child_pids(pid: int) -> list[int]:
    """The pids of a process's children (a workers supervisor's workers), read from /proc."""
    return [int(c) for task in Path(f"/proc/{pid}/task").glob("*/children") for c in task.read_text().split()]


def __getattr__(name: str) -> Any:
    """`ServiceProcess` lives in tests/harness.py; importing it from here still works (tests written before)."""
    if name == "ServiceProcess":
        from tests.harness import ServiceProcess

        return ServiceProcess
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def terminate(proc: subprocess.Popen[bytes] | None, timeout: float = 20.0) -> None:
    """SIGTERM a test's child process and wait for it; SIGKILL when it does not end within `timeout`."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)
