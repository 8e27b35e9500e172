"""A private RabbitMQ node for tests that need the broker in a state no one else may see (a resource alarm, closed
connections): its own node name, AMQP and distribution ports and data directories, started once per test session
by the tests that ask for the `rabbitmq_node` fixture, and stopped at the end.

Never point `rabbitmqctl` at the shared broker from a test: an alarm there blocks every developer and CI.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import free_port, wait_until_sync

USER = "rabbitmq"  # Debian's rabbitmq-server runs the node as this user (it su's to it when started by root)
START_TIMEOUT = 120.0


class RabbitMQNode:
    """One node, `url` its AMQP URL (guest/guest over loopback); `ctl` runs `rabbitmqctl -n <node>` against it."""

    def __init__(self) -> None:
        self.name = f"postroom-test-{uuid.uuid4().hex[:8]}@localhost"
        self.port = free_port()
        self.dist_port = free_port()
        # rabbitmq_prometheus's /metrics (resource alarms, memory and disk against their limits, messages).
        self.prometheus_port = free_port()
        # Not under pytest's tmp_path: that is private to root (0700) and the node runs as `rabbitmq`.
        self.directory = Path(tempfile.mkdtemp(prefix="postroom-rabbitmq-"))
        self.log_path = self.directory / "server.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    def _environment(self) -> dict[str, str]:
        d = self.directory
        (d / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = 127.0.0.1:{self.port}\n"
            f"prometheus.tcp.ip = 127.0.0.1\nprometheus.tcp.port = {self.prometheus_port}\n"
        )
        # No management listener to collide with the shared node's; the Prometheus endpoint on a port of its own.
        (d / "enabled_plugins").write_text("[rabbitmq_prometheus].\n")
        (d / "rabbitmq-env.conf").write_text("")  # not the system's, which names the shared node
        for sub in ("mnesia", "log"):
            (d / sub).mkdir(exist_ok=True)  # kept across restarts: the queues live there
        account = pwd.getpwnam(USER)
        d.chmod(0o755)
        for path in (d, *d.iterdir()):
            os.chown(path, account.pw_uid, account.pw_gid)
        return {
            **os.environ,
            "RABBITMQ_NODENAME": self.name,
            "RABBITMQ_CONFIG_FILE": str(d / "rabbitmq.conf"),
            "RABBITMQ_CONF_ENV_FILE": str(d / "rabbitmq-env.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(d / "enabled_plugins"),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(d / "mnesia"),
            "RABBITMQ_LOG_BASE": str(d / "log"),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
        }

    def start(self) -> RabbitMQNode:
        """Start in the background (not -detached, which would drop this environment) and wait for full boot."""
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            ["rabbitmq-server"], env=self._environment(), stdout=log, stderr=log, start_new_session=True
        )
        wait_until_sync(self._listening, START_TIMEOUT, what=f"RabbitMQ node {self.name} listening")
        self.ctl("await_startup", "--timeout", str(int(START_TIMEOUT)), timeout=START_TIMEOUT + 10)
        return self

    def _listening(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"rabbitmq-server exited {self.proc.returncode}: {self.log_tail()}")
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
        except OSError:
            return False
        return True

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]

    def ctl(self, *args: str, timeout: float = 60.0, tool: str = "rabbitmqctl") -> str:
        """Run a CLI tool against this node (only this one: `-n` is always given); its output."""
        done = subprocess.run(
            [tool, "-n", self.name, "-q", *args], capture_output=True, text=True, timeout=timeout, check=False
        )
        if done.returncode != 0:
            raise AssertionError(f"{tool} {' '.join(args)} failed ({done.returncode}): {done.stderr or done.stdout}")
        return done.stdout

    # -- resource alarms (https://www.rabbitmq.com/docs/alarms) -------------------------------------------------
    def alarms(self) -> str:
        return self.ctl("alarms", tool="rabbitmq-diagnostics").strip()

    def set_memory_alarm(self) -> None:
        """A memory alarm: the node blocks every connection that publishes until it is cleared."""
        self.ctl("set_vm_memory_high_watermark", "0")
        wait_until_sync(lambda: "memory alarm" in self.alarms().lower(), 60, what="memory alarm in effect")

    def clear_memory_alarm(self) -> None:
        self.ctl("set_vm_memory_high_watermark", "0.4")
        wait_until_sync(lambda: "memory alarm" not in self.alarms().lower(), 60, what="memory alarm cleared")

    @contextmanager
    def memory_alarm(self) -> Iterator[None]:
        """A memory alarm for the duration of the block, cleared whatever happens in it (the node is shared by the
        session's tests)."""
        self.set_memory_alarm()
        try:
            yield
        finally:
            self.clear_memory_alarm()

    def connections(self) -> list[tuple[str, str]]:
        """(client-provided connection name, state) of each client connection; states: running, blocking (an alarm
        is on, the connection has not published since), blocked (it published: the node reads nothing from it)."""
        rows = json.loads(self.ctl("list_connections", "client_properties", "state", "--formatter", "json") or "[]")
        return [(_connection_name(row["client_properties"]), str(row["state"])) for row in rows]

    def close_connections(self, reason: str = "test") -> None:
        self.ctl("close_all_connections", reason)

    def queue_counts(self, name: str) -> tuple[int, int]:
        """(ready, unacknowledged) messages of queue `name`."""
        for line in self.ctl("list_queues", "name", "messages_ready", "messages_unacknowledged").splitlines():
            fields = line.split("\t")
            if fields[0] == name:
                return int(fields[1]), int(fields[2])
        raise AssertionError(f"no queue {name} on {self.name}")

    def kill(self) -> None:
        """SIGKILL the node, as a crash would (its directory stays: `start` brings the same node back, with its
        quorum queues). The Erlang VM runs in a session of its own under `su`, so every process this object started
        is found through the process tree, not the process group."""
        if self.proc is None or self.proc.poll() is not None:
            return
        tree = _process_tree(self.proc.pid)
        for pid in reversed(tree):
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.proc.wait(30)
        self._wait_gone(tree)

    def _wait_gone(self, tree: list[int]) -> None:
        # The VM is not the wrapper's child: wait until it is gone too, or its listener still answers the next start.
        wait_until_sync(lambda: all(_gone(pid) for pid in tree), 30, what=f"every process of {self.name} gone")

    def restart(self, crash: bool = False) -> None:
        """Stop (`rabbitmqctl stop`) or kill the node, start it again, and have its quorum queues elect leaders."""
        if crash:
            self.kill()
        elif self.proc is not None and self.proc.poll() is None:
            tree = _process_tree(self.proc.pid)
            with suppress(AssertionError, subprocess.TimeoutExpired):
                self.ctl("stop", timeout=60)
            self._wait_or_kill()
            self._wait_gone(tree)
        self.start()
        self.elect()

    def elect(self) -> None:
        """Make every quorum queue elect its leader now. A single-node RabbitMQ 3.10 killed soon after a quorum
        queue took its first messages can come back with that queue leaderless for good ("leader call - leader not
        known", rabbitmq-server issue 10070; reproduced here with a kill right after the first publish); a cluster
        of three is not affected."""
        self.ctl(
            "eval",
            "[ra:trigger_election(amqqueue:get_pid(Q)) || Q <- rabbit_amqqueue:list(),"
            " amqqueue:get_type(Q) == rabbit_quorum_queue], ok.",
            timeout=120,
        )

    def stop(self) -> None:
        try:
            if self.proc is not None and self.proc.poll() is None:
                with suppress(AssertionError, subprocess.TimeoutExpired):
                    self.ctl("stop", timeout=60)
                self._wait_or_kill()
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)

    def _wait_or_kill(self) -> None:
        assert self.proc is not None
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.kill()


def _gone(pid: int) -> bool:
    """True once `pid` has exited (a zombie waiting to be reaped holds no sockets any more)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state in ("Z", "X")


def _process_tree(pid: int) -> list[int]:
    """`pid` and all its descendants, parents before children."""
    pids, index = [pid], 0
    while index < len(pids):
        for children in Path(f"/proc/{pids[index]}/task").glob("*/children"):
            with suppress(OSError):
                pids += [int(child) for child in children.read_text().split()]
        index += 1
    return pids


def _connection_name(properties: list[list[Any]]) -> str:
    for key, _, value in properties:
        if key == "connection_name":
            return str(value)
    return ""


def unavailable_reason() -> str | None:
    """Why a private node cannot run here, or None."""
    if not shutil.which("rabbitmq-server") or not shutil.which("rabbitmqctl"):
        return "rabbitmq-server not installed"
    if os.geteuid() != 0:
        return "a private RabbitMQ node needs root (to run it as the rabbitmq user)"
    try:
        pwd.getpwnam(USER)
    except KeyError:
        return "no rabbitmq user"
    return None


@pytest.fixture(scope="session")
def rabbitmq_node() -> Iterator[RabbitMQNode]:
    """A RabbitMQ node of this test session alone, started on first use (several seconds), stopped at the end."""
    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    node = RabbitMQNode()
    started = time.monotonic()
    try:
        node.start()
    except BaseException:
        node.stop()
        raise
    print(f"private RabbitMQ node {node.name} on port {node.port} up in {time.monotonic() - started:.1f}s")
    try:
        yield node
    finally:
        node.stop()
