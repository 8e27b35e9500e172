"""A private three-master Redis Cluster on loopback for tests (redis-server --cluster-enabled yes, redis-cli create)."""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import wait_until_sync


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _cluster_ports(count: int) -> list[int]:
    """Ports whose cluster-bus companions (port + 10000) are free too."""
    ports: list[int] = []
    for _ in range(500):
        port = random.randint(20000, 29999)
        if port not in ports and _port_free(port) and _port_free(port + 10000):
            ports.append(port)
            if len(ports) == count:
                return ports
    raise RuntimeError("no free ports for a Redis Cluster")


class RedisClusterProcesses:
    """Three masters, no replicas; `url` points at the first node (redis-py discovers the rest)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.ports = _cluster_ports(3)
        self.procs: list[subprocess.Popen[bytes]] = []

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.ports[0]}/0"

    def _cli(self, *args: str) -> str:
        done = subprocess.run(["redis-cli", *args], capture_output=True, timeout=30, check=True)
        return done.stdout.decode()

    def _spawn(self, port: int) -> subprocess.Popen[bytes]:
        node_dir = self.directory / str(port)
        node_dir.mkdir(parents=True, exist_ok=True)
        log = (node_dir / "redis.log").open("ab")
        args = ["--port", str(port), "--bind", "127.0.0.1", "--cluster-enabled", "yes"]
        args += ["--cluster-config-file", "nodes.conf", "--save", "", "--appendonly", "no", "--dir", str(node_dir)]
        return subprocess.Popen(["redis-server", *args], stdout=log, stderr=log)

    def _wait_ok(self) -> None:
        for port in self.ports:
            wait_until_sync(
                lambda p=port: "cluster_state:ok" in self._cli("-p", str(p), "cluster", "info"),  # type: ignore[misc]
                timeout=30,
                what="cluster_state:ok",
            )

    def start(self) -> RedisClusterProcesses:
        self.procs = [self._spawn(port) for port in self.ports]
        for port in self.ports:
            wait_until_sync(lambda p=port: self._ping(p), timeout=20, what=f"redis node {port}")  # type: ignore[misc]
        nodes = [f"127.0.0.1:{port}" for port in self.ports]
        self._cli("--cluster", "create", *nodes, "--cluster-replicas", "0", "--cluster-yes")
        self._wait_ok()
        return self

    def restart(self) -> None:
        """Every node stopped, then started again with its nodes.conf (same slots); the data is gone."""
        self.stop()
        self.procs = [self._spawn(port) for port in self.ports]
        for port in self.ports:
            wait_until_sync(lambda p=port: self._ping(p), timeout=20, what=f"redis node {port}")  # type: ignore[misc]
        self._wait_ok()

    def _ping(self, port: int) -> bool:
        try:
            return "PONG" in self._cli("-p", str(port), "ping")
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired):
            return False

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + 10
        for proc in self.procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterProcesses]:
    """A Redis Cluster of this test session alone; skipped where redis-server is not installed."""
    if not shutil.which("redis-server") or not shutil.which("redis-cli"):
        pytest.skip("redis-server/redis-cli not installed")
    cluster = RedisClusterProcesses(tmp_path_factory.mktemp("redis-cluster"))
    try:
        yield cluster.start()
    finally:
        cluster.stop()
