"""POSTROOM_LOG_FORMAT=json: every line a service writes (its events, the libraries', uncaught errors) is JSON."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from collections.abc import Callable
from typing import Any

import pytest

from tests.harness import Harness, ServiceProcess
from tests.helpers import ROOT, free_port, http_status, wait_until_sync

SERVICES = ("store", "smtp_ingress", "delivery", "pop3")
# A header line without a colon: aiohttp answers 400 and logs "Error handling request" with the parser's traceback.
BAD_HTTP = b"GET /metrics HTTP/1.1\r\nHost: postroom.test\r\nNot A Header\r\n\r\n"


class LoggingService:
    """A service process of the harness with JSON logs (stdout and stderr in one file), not waited on for readiness."""

    def __init__(self, process: ServiceProcess) -> None:
        self.process = process
        self.name = process.name
        self.metrics_port = process.metrics_port

    def running(self) -> bool:
        if self.process.proc is None or self.process.proc.poll() is not None:
            raise AssertionError(f"{self.name} exited: {self.text()[-3000:]}")
        return True

    def text(self) -> str:
        return self.process.log()

    def records(self) -> list[dict[str, Any]]:
        """Every line as JSON; a line that is not one object fails the test, quoted."""
        records = []
        for number, line in enumerate(self.text().splitlines(), 1):
            try:
                record = json.loads(line)
            except ValueError:
                raise AssertionError(f"{self.name} line {number} is not JSON: {line!r}") from None
            assert isinstance(record, dict), f"{self.name} line {number}: {line!r}"
            records.append(record)
        return records

    def wait_for(self, what: str, found: Callable[[dict[str, Any]], bool]) -> None:
        wait_until_sync(
            lambda: self.running() and any(found(r) for r in self.records()), 60, what=f"{self.name}: {what}"
        )


@pytest.fixture
def launch(harness: Harness) -> Callable[..., LoggingService]:
    def start(name: str, **overrides: str) -> LoggingService:
        service = LoggingService(harness.spawn(name, POSTROOM_LOG_FORMAT="json", **overrides))
        wait_until_sync(
            lambda: service.running() and http_status(f"{service.process.metrics_url}/healthz") == 200,
            60,
            what=f"{name} /healthz (log: {service.text()[-2000:]})",
        )
        return service

    return start


def send(port: int, data: bytes) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        while sock.recv(4096):
            pass


def from_logger(prefix: str) -> Callable[[dict[str, Any]], bool]:
    return lambda record: str(record.get("logger", "")).startswith(prefix)


def check_records(service: LoggingService) -> list[dict[str, Any]]:
    records = service.records()
    assert records, f"{service.name} wrote nothing"
    for record in records:
        assert {"event", "level", "timestamp"} <= record.keys(), record
        assert record.get("service"), record
    return records


@pytest.mark.parametrize("name", SERVICES)
def test_every_line_of_every_service_is_one_json_object(name: str, launch: Callable[..., LoggingService]) -> None:
    overrides = {}
    if name in ("smtp_ingress", "delivery"):
        # A closed port: aiormq logs every failed connect through stdlib logging while the service retries.
        overrides["POSTROOM_AMQP_URL"] = f"amqp://guest:guest@127.0.0.1:{free_port()}/"
    service = launch(name, **overrides)
    if name in ("smtp_ingress", "delivery"):
        service.wait_for("an aiormq line", from_logger("aiormq"))
    send(service.metrics_port, BAD_HTTP)
    service.wait_for("aiohttp's error line", from_logger("aiohttp"))
    if name == "smtp_ingress":
        # Not TLS on the implicit-TLS port, then a broken handshake after STARTTLS.
        send(service.process.port("smtps"), b"\x16\x03\x01\x00\x05hello" + b"\0" * 64)
        send(service.process.port("smtp"), b"EHLO client.test\r\nSTARTTLS\r\n" + b"\x16\x03\x01garbage" * 8)
        service.wait_for("the failed handshake", lambda r: "handshake" in str(r.get("event", "")))
    if name == "pop3":
        send(service.process.port("pop3s"), b"\x16\x03\x01\x00\x05hello" + b"\0" * 64)
    service.process.stop()
    records = check_records(service)
    (aiohttp,) = [r for r in records if from_logger("aiohttp")(r)]
    # The traceback is a field of the one line, not lines of its own.
    assert aiohttp["level"] == "error" and "Traceback" in aiohttp["exception"], aiohttp
    assert aiohttp["service"] == ("smtp" if name == "smtp_ingress" else name)


def run_python(code: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env={**os.environ, **(env or {})},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def json_lines(text: str) -> list[dict[str, Any]]:
    lines = text.splitlines()
    assert lines, "no output"
    return [json.loads(line) for line in lines]


def test_warnings_task_and_thread_errors_and_uncaught_exceptions_are_json() -> None:
    done = run_python(
        """
        import asyncio, gc, threading, warnings
        from shared.logging import configure_logging, get_logger

        configure_logging("info", "json", service="probe")
        get_logger("probe").info("hello", n=1)
        warnings.warn("something old", DeprecationWarning, stacklevel=1)

        async def fail():
            raise ValueError("in a task")

        async def main():
            asyncio.get_running_loop().create_task(fail())
            await asyncio.sleep(0)  # one turn of the loop: the task, scheduled first, runs and fails in it

        asyncio.run(main())  # the task's exception is never retrieved: asyncio logs it when the task is collected
        gc.collect()
        thread = threading.Thread(target=lambda: 1 / 0)
        thread.start()
        thread.join()
        raise RuntimeError("nobody caught me")
        """,
        env={"PYTHONWARNINGS": "always"},
    )
    assert done.returncode == 1
    assert done.stdout == ""
    records = json_lines(done.stderr)
    events = {r["event"]: r for r in records}
    assert events["hello"]["service"] == "probe" and events["hello"]["n"] == 1
    warning = next(r for r in records if r.get("logger") == "py.warnings")
    assert "something old" in warning["event"]
    task = next(r for r in records if r.get("logger") == "asyncio")
    assert "ValueError: in a task" in task["exception"]
    uncaught = [r for r in records if r["event"] == "uncaught exception"]
    assert [r["where"] for r in uncaught] == ["thread", "main thread"]
    assert "ZeroDivisionError" in uncaught[0]["exception"]
    assert "RuntimeError: nobody caught me" in uncaught[1]["exception"]
    assert all(r["level"] in {"info", "warning", "error", "critical"} for r in records)


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_a_bad_setting_is_reported_in_the_format_asked_for(fmt: str, harness: Harness) -> None:
    done = harness.run("pop3", POSTROOM_LOG_FORMAT=fmt, POSTROOM_POP3_LINE_LIMIT="seven")
    assert done.returncode == 2
    (line,) = done.stderr.splitlines()
    if fmt == "json":
        record = json.loads(line)
        assert record["level"] == "critical" and "POSTROOM_POP3_LINE_LIMIT" in record["event"]
    else:
        assert line.startswith("postroom: configuration error: POSTROOM_POP3_LINE_LIMIT")
