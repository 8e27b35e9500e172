"""The `postroom` CLI as a script sees it: the installed entry point as a process, its exit status and its one line.

0 success, 1 an error of the request (unknown domain, bad setting), 2 a usage error (click's convention), 75 when
Redis or RabbitMQ cannot be reached (EX_TEMPFAIL: the same command may work later); never a traceback.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import click
import pytest
import redis

from services.store.cli import cli
from tests.helpers import AMQP_URL, REDIS_URL, ROOT, free_port
from tests.redis_private import PrivateRedis

Run = Callable[..., subprocess.CompletedProcess[str]]
QUEUE_ID = "01JD3ZZZZZZZZZZZZZZZZZZZZZ"


def entry_point() -> list[str]:
    """The console script pip installed beside this interpreter (what an operator runs), else the module."""
    script = Path(sys.executable).with_name("postroom")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from services.store.cli import main; main()"]


@pytest.fixture
def postroom(namespace: str) -> Run:
    def run(*args: str, env: dict[str, str] | None = None, stdin: str = "") -> subprocess.CompletedProcess[str]:
        environ = {
            **os.environ,
            "POSTROOM_NAMESPACE": namespace,
            "POSTROOM_REDIS_URL": REDIS_URL,
            "POSTROOM_AMQP_URL": AMQP_URL,
            **(env or {}),
        }
        environ.pop("POSTROOM_DEBUG", None)
        return subprocess.run(
            [*entry_point(), *args], env=environ, input=stdin, capture_output=True, text=True, cwd=ROOT, timeout=60
        )

    return run


def one_line(done: subprocess.CompletedProcess[str], status: int) -> str:
    assert done.returncode == status, (done.returncode, done.stdout, done.stderr)
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("postroom: error: "), lines[0]
    assert "Traceback" not in done.stderr + done.stdout
    return lines[0]


def test_version(postroom: Run) -> None:
    done = postroom("--version")
    assert done.returncode == 0 and done.stderr == ""
    assert done.stdout == f"postroom {importlib.metadata.version('postroom')}\n"


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["no-such-command"], "No such command 'no-such-command'"),
        (["--bogus"], "No such option '--bogus'"),
        (["domain", "add"], "Missing argument 'NAME'"),
        (["domain", "add", "a.test", "b.test"], "unexpected extra argument"),
        (["user", "quota", "a@example.test", "lots"], "'lots' is not a valid integer"),
        (["user", "add", "a@example.test", "--quota", "-1"], "--quota"),
        (["queue", "dead", "list", "--limit", "0"], "--limit"),
        (["run", "--only", "nothing"], "--only"),
    ],
)
def test_usage_errors_exit_2(postroom: Run, args: list[str], says: str) -> None:
    line = one_line(postroom(*args), 2)
    assert says in line and "--help" in line
    assert postroom(*args).stdout == ""


def test_a_group_alone_shows_its_help_and_exits_2(postroom: Run) -> None:
    done = postroom("user")
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith("Usage: postroom user") and "add" in done.stderr


def closed_port() -> int:
    """A loopback port nothing listens on (taken from the kernel and released: a connect is refused)."""
    return free_port()


@pytest.mark.parametrize(
    "args",
    [
        ["domain", "list"],
        ["domain", "list", "--json"],
        ["domain", "add", "example.test"],
        ["user", "list", "--json"],
        ["user", "add", "a@example.test", "--password-stdin"],
        ["alias", "list"],
        ["trace", QUEUE_ID],
    ],
)
def test_redis_unreachable_exits_75(postroom: Run, args: list[str]) -> None:
    done = postroom(*args, env={"POSTROOM_REDIS_URL": f"redis://127.0.0.1:{closed_port()}/0"}, stdin="pw\n")
    assert "cannot reach Redis" in one_line(done, 75)
    assert done.stdout == ""


@pytest.mark.parametrize(
    "args",
    [
        ["queue", "status"],
        ["queue", "status", "--json"],
        ["queue", "dead", "list", "--json"],
        ["queue", "dead", "requeue", "--all"],
        ["queue", "dead", "purge", "--yes"],
    ],
)
def test_rabbitmq_unreachable_exits_75(postroom: Run, args: list[str]) -> None:
    done = postroom(*args, env={"POSTROOM_AMQP_URL": f"amqp://guest:guest@127.0.0.1:{closed_port()}/"})
    assert "cannot reach RabbitMQ" in one_line(done, 75)


def test_redis_refusing_writes_exits_75(postroom: Run, private_redis: PrivateRedis) -> None:
    """maxmemory reached with noeviction (the deploy files' policy): Redis answers OOM until memory is freed."""
    client = redis.Redis.from_url(private_redis.url)
    client.config_set("maxmemory-policy", "noeviction")
    client.config_set("maxmemory", "1")  # the private server of this test alone
    client.close()
    done = postroom("domain", "add", "example.test", env={"POSTROOM_REDIS_URL": private_redis.url})
    assert "Redis refuses writes" in one_line(done, 75)


def test_errors_of_the_request_exit_1(postroom: Run) -> None:
    assert "no such domain" in one_line(postroom("domain", "remove", "nowhere.test"), 1)
    assert "no trace" in one_line(postroom("trace", QUEUE_ID), 1)
    assert "not a queue id" in one_line(postroom("trace", "not-an-id"), 1)
    assert "POSTROOM_NAMESPACE" in one_line(postroom("domain", "list", env={"POSTROOM_NAMESPACE": "bad one!"}), 1)
    assert "no password" in one_line(postroom("user", "add", "a@example.test", "--password-stdin"), 1)


def commands(group: click.Group, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], click.Command]]:
    found: list[tuple[tuple[str, ...], click.Command]] = []
    for name, command in sorted(group.commands.items()):
        found.append(((*path, name), command))
        if isinstance(command, click.Group):
            found += commands(command, (*path, name))
    return found


def test_every_list_command_has_json() -> None:
    listings = [
        path
        for path, command in commands(cli)
        if path[-1] in ("list", "status") and not isinstance(command, click.Group)
    ]
    assert len(listings) >= 5
    for path, command in commands(cli):
        if path in listings:
            assert "--json" in [opt for param in command.params for opt in getattr(param, "opts", [])], path


def test_every_list_prints_json_a_script_can_read(postroom: Run) -> None:
    """As a script runs them: each listing's --json is one JSON document on stdout, nothing on stderr."""
    assert postroom("domain", "add", "example.test").returncode == 0
    assert postroom("user", "add", "a@example.test", "--password-stdin", stdin="pw\n").returncode == 0
    assert postroom("alias", "add", "postmaster@example.test", "a@example.test").returncode == 0
    expected = {
        ("domain", "list"): ["example.test"],
        ("alias", "list"): {"postmaster@example.test": ["a@example.test"]},
        ("queue", "dead", "list"): [],
    }
    listings = [path for path, _ in commands(cli) if path[-1] in ("list", "status") and path[0] != "run"]
    for path in listings:
        done = postroom(*path, "--json")
        assert done.returncode == 0 and done.stderr == "", (path, done.stderr)
        value = json.loads(done.stdout)
        if path in expected:
            assert value == expected[path], path
    users = json.loads(postroom("user", "list", "--json").stdout)
    assert [u["address"] for u in users] == ["a@example.test"]


@pytest.mark.skipif(shutil.which("sh") is None, reason="no POSIX shell")
def test_a_shell_script_can_branch_on_the_status(postroom: Run, namespace: str) -> None:
    """What the statuses are for: retry on 75, stop on anything else."""
    script = f"""
        {" ".join(entry_point())} domain list >/dev/null 2>&1
        case $? in 0) echo ok ;; 75) echo retry-later ;; *) echo failed ;; esac
    """
    env = {**os.environ, "POSTROOM_NAMESPACE": namespace, "POSTROOM_REDIS_URL": f"redis://127.0.0.1:{closed_port()}/0"}
    done = subprocess.run(["sh", "-c", script], env=env, capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == "retry-later"
