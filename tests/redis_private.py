"""A private redis-server for tests that restart, stop or otherwise disturb Redis (never the shared one)."""

from __future__ import annotations

import shutil
import socket
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.helpers import free_port, terminate, wait_until_sync

DEFAULT_CONFIG = ("--save", "", "--appendonly", "yes", "--appendfsync", "always")


class PrivateRedis:
    """One redis-server on a free loopback port in its own directory. The append-only file keeps the data across
    `restart()`, as a production Redis with persistence would; the port stays the same. `config` replaces the
    persistence arguments (e.g. a deployment's own command line); `password` is its requirepass, if it has one."""

    def __init__(self, directory: Path, config: Sequence[str] = DEFAULT_CONFIG, password: str | None = None) -> None:
        self.directory = directory
        self.port = free_port()
        self.config = list(config)
        self.password = password
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self, *options: str, wait: bool = True) -> PrivateRedis:
        """Start it, with extra redis-server `options` for this run; `wait`: until it answers PING."""
        # The place and port last: redis-server takes the last value of an option given twice.
        args = [*self.config, *options, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.directory)]
        log = (self.directory / "redis.log").open("ab")
        self.proc = subprocess.Popen(["redis-server", *args], stdout=log, stderr=log)
        if not wait:
            return self
        wait_until_sync(lambda: self.answers() or self._exited(), timeout=20, what=f"private redis on {self.port}")
        if not self.answers():
            raise AssertionError(f"redis-server exited: {(self.directory / 'redis.log').read_text()[-2000:]}")
        return self

    def command(self, *args: Any) -> Any:
        """One command on this instance alone (CONFIG SET, REPLICAOF, ...: never on the shared Redis)."""
        with redis.Redis(port=self.port, password=self.password, socket_timeout=10) as client:
            return client.execute_command(*args)

    def config_set(self, name: str, value: str | int) -> None:
        self.command("CONFIG", "SET", name, value)

    def replica_of_nobody(self) -> None:
        """A replica of a master that does not exist (a failover caught half-way): it keeps its data and refuses
        writes (READONLY), or every command with `replica-serve-stale-data no` (MASTERDOWN)."""
        self.command("REPLICAOF", "127.0.0.1", str(free_port()))

    def promote(self) -> None:
        self.command("REPLICAOF", "NO", "ONE")

    def answers(self) -> bool:
        """PING answered PONG (not LOADING, not refused)."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=2) as sock:
                if self.password:
                    sock.sendall(f"AUTH {self.password}\r\n".encode())
                    if not sock.recv(64).startswith(b"+OK"):
                        return False
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def _exited(self) -> bool:
        return self.proc is None or self.proc.poll() is not None

    def stop(self) -> None:
        """SIGTERM: Redis closes every client connection, syncs its append-only file and exits."""
        terminate(self.proc)
        self.proc = None

    def kill(self) -> None:
        """SIGKILL, as a crash would: what the append-only file holds (every write, fsynced) survives."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None

    def restart(self) -> None:
        """Stop, then start on the same port (Redis binds with SO_REUSEADDR)."""
        self.stop()
        self.start()


@pytest.fixture
def private_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateRedis]:
    """A redis-server of this test alone, stopped at teardown; skipped where redis-server is not installed."""
    if not shutil.which("redis-server"):
        pytest.skip("redis-server not installed")
    redis = PrivateRedis(tmp_path_factory.mktemp("redis-private"))
    try:
        yield redis.start()
    finally:
        redis.stop()
