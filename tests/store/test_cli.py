"""The `postroom` CLI against the real Redis: accounts commands, one-line errors, exit statuses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest
from click.testing import CliRunner

from services.store import Store
from services.store.cli import cli
from tests.helpers import ROOT


@pytest.fixture
def postroom(namespace: str, store_env: dict[str, str]):  # type: ignore[no-untyped-def]
    runner = CliRunner()

    def invoke(*args: str, input: str | None = None, env: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
        # In a thread of its own: the CLI runs its own event loop (asyncio.run), the async tests already have one.
        with ThreadPoolExecutor(1) as pool:
            environ = {"POSTROOM_NAMESPACE": namespace, **store_env, **(env or {})}
            return pool.submit(runner.invoke, cli, list(args), input=input, env=environ).result()

    return invoke


def one_line_error(result, status: int = 1) -> str:  # type: ignore[no-untyped-def]
    assert result.exit_code == status, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("postroom: error: ")
    assert "Traceback" not in result.output
    return str(lines[0])


async def test_domain_add_list_remove(postroom, store: Store) -> None:  # type: ignore[no-untyped-def]
    assert postroom("domain", "add", "Example.TEST").exit_code == 0
    assert await store.accounts.list_domains() == ["example.test"]
    result = postroom("domain", "list")
    assert result.exit_code == 0 and "example.test" in result.stdout and "DOMAIN" in result.stdout
    assert json.loads(postroom("domain", "list", "--json").stdout) == ["example.test"]
    assert postroom("domain", "remove", "example.test").exit_code == 0
    assert await store.accounts.list_domains() == []
    assert "no such domain" in one_line_error(postroom("domain", "remove", "example.test"))
    assert "bad domain" in one_line_error(postroom("domain", "add", "bad-.test"))


async def test_user_add_with_password_stdin_then_login(postroom, store: Store) -> None:  # type: ignore[no-untyped-def]
    postroom("domain", "add", "example.test")
    result = postroom("user", "add", "alice@example.test", "--password-stdin", "--quota", "5000", input="s3cret pw\n")
    assert result.exit_code == 0, result.output
    assert await store.accounts.authenticate("alice@example.test", "s3cret pw")
    user = await store.accounts.get_user("alice@example.test")
    assert user is not None and user.quota == 5000
    users = json.loads(postroom("user", "list", "--json").stdout)
    assert [(u["address"], u["quota"], u["messages"]) for u in users] == [("alice@example.test", 5000, 0)]
    assert "alice@example.test" in postroom("user", "list").stdout
    assert "already exists" in one_line_error(
        postroom("user", "add", "alice@example.test", "--password-stdin", input="x\n")
    )


async def test_user_add_prompts_twice_hidden(postroom, store: Store) -> None:  # type: ignore[no-untyped-def]
    postroom("domain", "add", "example.test")
    result = postroom("user", "add", "bob@example.test", input="pw-one\npw-one\n")
    assert result.exit_code == 0, result.output
    assert "pw-one" not in result.output  # hidden input is not echoed
    assert await store.accounts.authenticate("bob@example.test", "pw-one")
    mismatch = postroom("user", "passwd", "bob@example.test", input="a\nb\n")
    assert mismatch.exit_code == 1  # click asks again after a mismatch, then input ends: aborted
    assert await store.accounts.authenticate("bob@example.test", "pw-one")


async def test_user_passwd_and_remove(postroom, store: Store) -> None:  # type: ignore[no-untyped-def]
    postroom("domain", "add", "example.test")
    postroom("user", "add", "carol@example.test", "--password-stdin", input="old\n")
    assert postroom("user", "passwd", "carol@example.test", "--password-stdin", input="new\r\n").exit_code == 0
    assert await store.accounts.authenticate("carol@example.test", "new")
    assert not await store.accounts.authenticate("carol@example.test", "old")
    assert postroom("user", "remove", "carol@example.test").exit_code == 0
    assert not await store.accounts.user_exists("carol@example.test")
    assert "no such user" in one_line_error(postroom("user", "remove", "carol@example.test"))
    assert "no such user" in one_line_error(
        postroom("user", "passwd", "carol@example.test", "--password-stdin", input="x\n")
    )


def test_user_errors_are_one_line(postroom) -> None:  # type: ignore[no-untyped-def]
    assert "not a local domain" in one_line_error(
        postroom("user", "add", "dave@nowhere.test", "--password-stdin", input="x\n")
    )
    assert "bad address" in one_line_error(postroom("user", "add", "not-an-address", "--password-stdin", input="x\n"))
    assert "no password" in one_line_error(postroom("user", "add", "e@x.test", "--password-stdin", input=""))
    # Usage errors: exit status 2, as click's own.
    one_line_error(postroom("user", "add", "e@x.test", "--quota", "-1", "--password-stdin", input="x\n"), 2)
    one_line_error(postroom("user", "add"), 2)
    one_line_error(postroom("no-such-command"), 2)


async def test_alias_add_list_remove(postroom, store: Store) -> None:  # type: ignore[no-untyped-def]
    postroom("domain", "add", "example.test")
    assert postroom("alias", "add", "postmaster@example.test", "root@example.test", "ops@remote.test").exit_code == 0
    assert postroom("alias", "add", "@example.test", "root@example.test").exit_code == 0
    listed = json.loads(postroom("alias", "list", "--json").stdout)
    assert listed == {
        "@example.test": ["root@example.test"],
        "postmaster@example.test": ["root@example.test", "ops@remote.test"],
    }
    assert "ops@remote.test" in postroom("alias", "list").stdout
    assert await store.accounts.recipient_exists("anyone@example.test")
    assert postroom("alias", "remove", "@example.test").exit_code == 0
    assert "no such alias" in one_line_error(postroom("alias", "remove", "@example.test"))
    one_line_error(postroom("alias", "add", "x@example.test"), 2)


def test_redis_unreachable_is_one_line(postroom) -> None:  # type: ignore[no-untyped-def]
    from tests.helpers import free_port

    result = postroom("domain", "list", env={"POSTROOM_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"})
    assert "cannot reach Redis" in one_line_error(result, 75)


def test_bad_setting_is_one_line(postroom) -> None:  # type: ignore[no-untyped-def]
    result = postroom("domain", "list", env={"POSTROOM_NAMESPACE": "bad namespace!"})
    assert "POSTROOM_NAMESPACE" in one_line_error(result)


def test_console_script_end_to_end(namespace: str) -> None:
    """The installed entry point, as a script would run it: exit statuses and stderr, no traceback."""
    env = {**os.environ, "POSTROOM_NAMESPACE": namespace}
    cmd = [sys.executable, "-c", "from services.store.cli import main; main()"]
    ok = subprocess.run([*cmd, "domain", "add", "example.test"], env=env, capture_output=True, cwd=ROOT, timeout=30)
    assert ok.returncode == 0 and ok.stdout.strip() == b"domain example.test added"
    env["POSTROOM_REDIS_URL"] = "redis://127.0.0.1:1/0"
    bad = subprocess.run([*cmd, "user", "list"], env=env, capture_output=True, cwd=ROOT, timeout=30)
    assert bad.returncode == 75
    assert bad.stderr.decode().count("\n") == 1 and bad.stderr.startswith(b"postroom: error: cannot reach Redis")
