"""`postroom run`: children with prefixed output, signals forwarded, all stopped when one dies."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import ROOT, free_port, http_status, wait_until_sync

ENTRY = [sys.executable, "-c", "from services.store.cli import main; main()", "run"]


class Run:
    """A `postroom run` process whose stdout/stderr lines are collected by reader threads."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [*ENTRY, *args], env={**os.environ, **env}, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        self.out: list[str] = []
        self.err: list[str] = []
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self._threads = [
            threading.Thread(target=self._read, args=(self.proc.stdout, self.out), daemon=True),
            threading.Thread(target=self._read, args=(self.proc.stderr, self.err), daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    @staticmethod
    def _read(stream, into: list[str]) -> None:  # type: ignore[no-untyped-def]
        for line in stream:
            into.append(line.decode(errors="replace").rstrip("\n"))

    def wait(self, timeout: float = 30) -> int:
        code = self.proc.wait(timeout)
        for thread in self._threads:
            thread.join(5)
        return code

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def runs() -> Iterator[list[Run]]:
    started: list[Run] = []
    yield started
    for run in started:
        run.stop()


def test_prefixes_output_and_forwards_sigterm(runs: list[Run]) -> None:
    modules = ["--module", "alpha=tests.store.fake_service", "--module", "beta=tests.store.fake_service"]
    run = Run(modules, {"POSTROOM_METRICS_LISTEN": "127.0.0.1:9999"})
    runs.append(run)
    # stdout and stderr of a child travel separately: wait for both children's lines on both.
    wait_until_sync(
        lambda: sum("fake up" in line for line in run.out) == 2 and sum("to stderr" in line for line in run.out) == 2,
        what=f"both up: {run.out} {run.err}",
    )
    assert any(line.startswith("alpha | fake up") and line.endswith("metrics=") for line in run.out)
    assert any("ignoring POSTROOM_METRICS_LISTEN" in line for line in run.err)
    assert any(line.startswith("beta  | to stderr") for line in run.out)  # stderr merged, same prefix
    run.proc.send_signal(signal.SIGTERM)
    assert run.wait() == 0
    assert f"alpha | fake got signal {int(signal.SIGTERM)}" in run.out
    assert f"beta  | fake got signal {int(signal.SIGTERM)}" in run.out


def test_forwards_sigint(runs: list[Run]) -> None:
    run = Run(["--module", "alpha=tests.store.fake_service"], {})
    runs.append(run)
    wait_until_sync(lambda: any("fake up" in line for line in run.out), what="child up")
    run.proc.send_signal(signal.SIGINT)
    run.proc.send_signal(signal.SIGTERM)  # as a wrapper script's trap adds to a Ctrl-C: still one clean stop
    assert run.wait() == 0
    # Whichever of the two the kernel delivered first is passed on, once; nobody is killed.
    stops = [line for line in run.out if line.startswith("alpha | fake got signal")]
    assert stops in (
        [f"alpha | fake got signal {int(signal.SIGINT)}"],
        [f"alpha | fake got signal {int(signal.SIGTERM)}"],
    ), run.out


def test_one_child_dies_the_others_are_stopped(runs: list[Run], tmp_path: Path) -> None:
    modules = ["--module", "steady=tests.store.fake_service", "--module", "crashy=tests.store.fake_crash"]
    ready = tmp_path / "steady-ready"
    os.mkfifo(ready)
    run = Run(modules, {"FAKE_READY_FILE": str(ready)})
    runs.append(run)
    assert run.wait() == 1
    assert any("crashy exited with status 3" in line for line in run.err), run.err
    assert f"steady | fake got signal {int(signal.SIGTERM)}" in run.out


def test_bad_option_is_one_line() -> None:
    done = subprocess.run([*ENTRY, "--only", "nothing"], cwd=ROOT, capture_output=True, timeout=30)
    assert done.returncode == 2  # a usage error (click's convention)
    assert done.stderr.decode().count("\n") == 1 and done.stderr.startswith(b"postroom: error: ")


def test_runs_all_four_services(runs: list[Run], base_env: dict[str, str]) -> None:
    """What `make run` does: the four real services up and ready, then stopped cleanly by one SIGTERM."""
    ports = {name: free_port() for name in ("store", "smtp_ingress", "delivery", "pop3")}
    env = {**base_env, **{f"POSTROOM_{n.upper()}_METRICS_LISTEN": f"127.0.0.1:{p}" for n, p in ports.items()}}
    run = Run([], env)
    runs.append(run)
    for name, port in ports.items():
        wait_until_sync(
            lambda port=port: http_status(f"http://127.0.0.1:{port}/readyz") == 200,  # type: ignore[misc]
            timeout=60,
            what=f"{name} ready: {run.out[-20:]} {run.err}",
        )
    run.proc.send_signal(signal.SIGTERM)
    assert run.wait(60) == 0, run.out[-30:] + run.err
    assert {line.split(" | ")[0].strip() for line in run.out if " | " in line} >= set(ports)
