"""Test helpers: free ports, waiting on a condition with a deadline, HTTP status of a health endpoint."""

from __future__ import annotations

import asyncio
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
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def free_port_run(count: int, host: str = "127.0.0.1") -> int:
    """The first of `count` consecutive free ports, below the kernel's ephemeral range.

    For a service that listens on port + i (the ingress's workers' metrics): a port the kernel hands out to
    outgoing connections could be taken by any process's connect() between this check and the service's bind.
    """
    with open("/proc/sys/net/ipv4/ip_local_port_range") as ranges:
        ephemeral_low = int(ranges.read().split()[0])
    for _ in range(500):
        first = random.randint(20000, ephemeral_low - count - 1)
        if all(_port_free(host, first + i) for i in range(count)):
            return first
    raise RuntimeError(f"no {count} consecutive free ports below {ephemeral_low}")


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
