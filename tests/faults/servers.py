"""A private Redis that a test or the soak may kill and restart (never the shared one); for a private RabbitMQ node
see tests/rabbitmq_node.py.

PrivateRedis: `redis-server` on a free port with an append-only file (fsync `always` by default) in a directory of
its own, so a SIGKILL loses nothing that was acknowledged.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import redis

from tests.helpers import free_port, wait_until_sync


def _end(proc: subprocess.Popen[bytes] | None, sig: signal.Signals, timeout: float) -> None:
    """Send `sig` to the process group this object started (its own session), and wait for its leader."""
    if proc is None or proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


class PrivateRedis:
    """A redis-server of our own; `appendfsync` always (nothing acknowledged is lost) or everysec (up to ~1 s)."""

    def __init__(self, base: Path, appendfsync: str = "always") -> None:
        self.port = free_port()
        self.dir = base / "redis"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.appendfsync = appendfsync
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 30) -> PrivateRedis:
        command = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        command += ["--appendonly", "yes", "--appendfsync", self.appendfsync, "--dir", str(self.dir)]
        log = (self.dir / "redis.log").open("ab")
        self.proc = subprocess.Popen(command, stdout=log, stderr=log, start_new_session=True)
        self.starts += 1
        wait_until_sync(self.ping, timeout, "the private redis-server")
        return self

    def ping(self) -> bool:
        try:
            with redis.Redis(port=self.port, socket_timeout=1) as client:
                return bool(client.ping())
        except redis.exceptions.RedisError:
            return False

    def kill(self) -> None:
        _end(self.proc, signal.SIGKILL, 10)

    def stop(self) -> None:
        _end(self.proc, signal.SIGTERM, 30)
