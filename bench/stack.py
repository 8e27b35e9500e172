"""Start the four services as real processes for a benchmark and read their CPU time and peak memory."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

# Ports for the bench's services come from below the kernel's ephemeral range, where no outgoing connection takes
# one between the choice and the service's bind (bench.run once lost a run to that).
from tests.helpers import free_port as free_port

ROOT = Path(__file__).resolve().parent.parent
SERVICES = ("smtp_ingress", "delivery", "pop3", "store")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int, reaped: bool = False) -> float:
    """User + system CPU time of a process so far; with `reaped`, also that of the children it has waited for.

    Forking servers (Postfix, Dovecot) end their workers and reap them: the dead workers' CPU time is only left
    in their parent's cutime/cstime.
    """
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])
    if reaped:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / CLOCK_TICKS


def process_tree(pid: int) -> list[int]:
    """A process and all its descendants (an ingress with POSTROOM_SMTP_WORKERS > 1 is a parent and N workers)."""
    pids, index = [pid], 0
    while index < len(pids):
        try:
            tasks = list(Path(f"/proc/{pids[index]}/task").glob("*/children"))
        except OSError:  # the process ended while we looked (a forking server's worker)
            tasks = []
        for task in tasks:
            try:
                pids += [int(child) for child in task.read_text().split()]
            except OSError:
                continue
        index += 1
    return pids


def tree_cpu_seconds(pid: int, reaped: bool = False) -> float:
    total = 0.0
    for member in process_tree(pid):
        try:
            total += cpu_seconds(member, reaped)
        except OSError:
            continue
    return total


def tree_peak_rss_bytes(pid: int) -> int:
    """Sum of the peaks of every process in the tree (an upper bound of the tree's own peak)."""
    total = 0
    for member in process_tree(pid):
        try:
            total += peak_rss_bytes(member)
        except OSError:
            continue
    return total


def tree_rss_bytes(pid: int) -> int:
    total = 0
    for member in process_tree(pid):
        try:
            total += rss_bytes(member)
        except OSError:
            continue
    return total


def tree_pss_bytes(pid: int) -> int:
    """Proportional set size of the tree (`Pss` of /proc/<pid>/smaps_rollup summed): shared pages counted once
    over the processes sharing them, unlike a sum of RSS, which counts a forking server's libraries per worker."""
    total = 0
    for member in process_tree(pid):
        try:
            for line in Path(f"/proc/{member}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1]) * 1024
                    break
        except OSError:
            continue
    return total


def peak_rss_bytes(pid: int) -> int:
    """The process's high-water resident set size (VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


@dataclass
class Stack:
    """The services of one benchmark run, in their own namespace, on free loopback ports."""

    namespace: str
    log_dir: Path
    extra_env: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    profilers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    metrics_ports: dict[str, int] = field(default_factory=dict)
    # Root pids of private servers of this run ("redis", "rabbitmq"; bench/brokers.py): their CPU is read from them
    # rather than from the shared servers found by name.
    servers: dict[str, int] = field(default_factory=dict)
    # Processes per service (default 1): the second delivery is "delivery-2", with its own metrics port.
    replicas: dict[str, int] = field(default_factory=dict)

    def port(self, variable: str) -> int:
        return int(self.env[variable].rsplit(":", 1)[1])

    def start(self, only: tuple[str, ...] = SERVICES) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.env = {
            **os.environ,
            "POSTROOM_NAMESPACE": self.namespace,
            "POSTROOM_HOSTNAME": "bench.postroom.test",
            "POSTROOM_LOG_LEVEL": "warning",
            "POSTROOM_SMTP_LISTEN": f"127.0.0.1:{free_port()}",
            "POSTROOM_SUBMISSION_LISTEN": "",
            "POSTROOM_SMTPS_LISTEN": "",
            "POSTROOM_POP3_LISTEN": f"127.0.0.1:{free_port()}",
            "POSTROOM_POP3S_LISTEN": "",
            "POSTROOM_ADMIN_LISTEN": f"127.0.0.1:{free_port()}",
            "POSTROOM_ADMIN_TOKEN": "bench",
            **self.extra_env,
        }
        started = []
        for service in only:
            for replica in range(1, self.replicas.get(service, 1) + 1):
                name = service if replica == 1 else f"{service}-{replica}"
                port = free_port()
                self.metrics_ports[name] = port
                env = {**self.env, "POSTROOM_METRICS_LISTEN": f"127.0.0.1:{port}"}
                log = (self.log_dir / f"{name}.log").open("ab")
                self.procs[name] = subprocess.Popen(
                    [sys.executable, "-m", f"services.{service}"], env=env, cwd=ROOT, stdout=log, stderr=log
                )
                started.append(name)
        deadline = time.monotonic() + 60
        for name in started:
            while not self._ready(name):
                if self.procs[name].poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{name} did not become ready; see {self.log_dir / (name + '.log')}")
                time.sleep(0.1)

    def workers(self, name: str) -> int:
        """How many processes share the service's ports (1 but for the ingress and pop3 with workers)."""
        variable = {"smtp_ingress": "POSTROOM_SMTP_WORKERS", "pop3": "POSTROOM_POP3_WORKERS"}.get(name)
        return int(self.env.get(variable, "1")) if variable else 1

    def _ready(self, name: str) -> bool:
        # Every worker (POSTROOM_SMTP_WORKERS, POSTROOM_POP3_WORKERS; /readyz on the metrics port + i) must be
        # ready, or the first connections the kernel hands a worker still starting are refused or answered 451.
        workers = self.workers(name)
        try:
            for offset in range(workers):
                url = f"http://127.0.0.1:{self.metrics_ports[name] + offset}/readyz"
                with urllib.request.urlopen(url, timeout=1) as response:
                    if response.status != 200:
                        return False
            return True
        except OSError:
            return False

    def profile(self, name: str, out: Path, rate: int = 100) -> None:
        """Sample a service with py-spy until `stop()`; writes collapsed stacks (`-f raw`) to `out`."""
        py_spy = Path(sys.executable).parent / "py-spy"
        command = [str(py_spy), "record", "-r", str(rate), "-f", "raw", "-o", str(out), "--pid"]
        command += [str(self.procs[name].pid), "--nonblocking", "--subprocesses"]
        log = (self.log_dir / f"py-spy-{name}.log").open("ab")
        self.profilers.append(subprocess.Popen(command, stdout=log, stderr=log))

    def stop_profiling(self) -> None:
        """py-spy writes its file when interrupted."""
        for profiler in self.profilers:
            profiler.send_signal(signal.SIGINT)
        for profiler in self.profilers:
            try:
                profiler.wait(60)
            except subprocess.TimeoutExpired:
                profiler.kill()
        self.profilers.clear()

    def cpu(self) -> dict[str, float]:
        """CPU seconds of each service, and of the broker and Redis: the run's private ones, or the shared ones
        (found by name; their CPU includes everyone's traffic)."""
        used = {name: tree_cpu_seconds(proc.pid) for name, proc in self.procs.items()}
        for name, pid in self.servers.items():
            used[name] = tree_cpu_seconds(pid)
        for name, pattern in (("rabbitmq", "beam.smp"), ("redis", "redis-server .*:6379")):
            if name in self.servers:
                continue
            found = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True, check=False).stdout.split()
            if found:
                used[name] = sum(cpu_seconds(int(pid)) for pid in found)
        return used

    def peak_rss(self) -> dict[str, int]:
        return {name: tree_peak_rss_bytes(proc.pid) for name, proc in self.procs.items()}

    def stop(self) -> None:
        self.stop_profiling()
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
