"""The documented Redis backup restores: mail in a Redis run with the compose file's own configuration, backed up
with `redis-cli --rdb`, restored by deploy/redis/restore.sh into an empty Redis of the same configuration, which is
then restarted and read over POP3 (poplib against the real POP3 service): the same messages, the same UIDLs."""

from __future__ import annotations

import os
import poplib
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from services.store import Store
from shared.queue_id import new_queue_id
from tests.deploy.queries import ROOT
from tests.harness import ServiceProcess
from tests.helpers import free_port
from tests.redis_private import PrivateRedis

RESTORE = ROOT / "deploy" / "redis" / "restore.sh"
PASSWORD = "backup0test0password"  # the Redis requirepass, as REDIS_PASSWORD in .env
USER = "alice@example.test"
USER_PASSWORD = "correct horse battery staple"
pytestmark = pytest.mark.skipif(
    not (shutil.which("redis-server") and shutil.which("redis-cli")), reason="redis-server and redis-cli needed"
)


def compose_redis_config() -> list[str]:
    """The Redis command line of docker-compose.yml (AOF, snapshots, maxmemory, noeviction), its variables filled in
    as an operator's .env would (the password) or left at their defaults."""
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    program, *args = compose["services"]["redis"]["command"]
    assert program == "redis-server"
    filled = []
    for arg in map(str, args):
        if arg.startswith("${REDIS_PASSWORD"):
            arg = PASSWORD
        elif arg.startswith("${"):
            arg = arg.split(":-", 1)[1].rstrip("}")
        filled.append(arg)
    return filled


@pytest.fixture
def redis_pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[PrivateRedis, PrivateRedis]]:
    """Two private Redis servers configured as in docker-compose.yml: the one in service and an empty one."""
    started = []
    try:
        for name in ("redis-in-service", "redis-restored"):
            server = PrivateRedis(tmp_path_factory.mktemp(name), compose_redis_config(), PASSWORD)
            started.append(server.start())
        yield started[0], started[1]
    finally:
        for server in started:
            server.stop()


def redis_cli(server: PrivateRedis, *args: str) -> str:
    done = subprocess.run(
        ["redis-cli", "-p", str(server.port), *args],
        env={**os.environ, "REDISCLI_AUTH": PASSWORD},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return done.stdout.strip()


def take_backup(server: PrivateRedis, path: Path) -> Path:
    done = subprocess.run(
        ["redis-cli", "-p", str(server.port), "--rdb", str(path)],
        env={**os.environ, "REDISCLI_AUTH": PASSWORD},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert "Transfer finished with success" in done.stderr, done.stderr
    return path


def restore(backup: Path, target: PrivateRedis, work: Path) -> subprocess.CompletedProcess[str]:
    """deploy/redis/restore.sh as the docs run it inside the Redis container (sh, the target on its local port)."""
    env = {
        **os.environ,
        "REDIS_PORT": str(target.port),
        "REDISCLI_AUTH": PASSWORD,
        "RESTORE_DIR": str(work / "restore"),
        "RESTORE_PORT": str(free_port()),
        "RESTORE_TIMEOUT": "120",
    }
    return subprocess.run(["sh", str(RESTORE), str(backup)], env=env, capture_output=True, text=True, timeout=300)


def mailbox_over_pop3(port: int, delete_first: bool = False) -> list[tuple[str, bytes]]:
    """(UIDL, message) of every message, in order, as a POP3 client that keeps mail on the server sees them."""
    pop = poplib.POP3("127.0.0.1", port, timeout=60)
    try:
        pop.user(USER)
        pop.pass_(USER_PASSWORD)
        _response, listing, _octets = pop.uidl()
        messages = []
        for entry in listing:
            number, uid = entry.decode().split()
            _response, lines, _octets = pop.retr(int(number))
            messages.append((uid, b"\r\n".join(lines)))
        if delete_first:
            pop.dele(1)
        return messages
    finally:
        pop.quit()


def message(n: int, size: int = 0) -> bytes:
    body = b"".join(b"line %d of a long message\r\n" % i for i in range(size // 28)) if size else b"Hello.\r\n"
    head = f"From: bob@remote.test\r\nTo: {USER}\r\nSubject: backup test {n}\r\n\r\n".encode()
    return head + b".a line starting with a dot\r\n" + body


async def test_a_backup_restores_into_an_empty_redis_and_pop3_serves_the_same_mail(
    redis_pair: tuple[PrivateRedis, PrivateRedis],
    namespace: str,
    start_service: Callable[..., ServiceProcess],
    base_env: dict[str, str],
    tmp_path: Path,
) -> None:
    in_service, restored = redis_pair
    pop3_port = int(base_env["POSTROOM_POP3_LISTEN"].rsplit(":", 1)[1])
    store = Store.connect(in_service.url, namespace)
    try:
        await store.accounts.add_domain("example.test")
        await store.accounts.add_user(USER, USER_PASSWORD, quota=50_000_000)
        for n, size in enumerate((0, 3 * 1024 * 1024, 0)):
            await store.mailboxes.deliver(USER, new_queue_id(), message(n, size))
        usage = await store.accounts.get_user(USER)
        pop3 = start_service("pop3", POSTROOM_REDIS_URL=in_service.url)
        before = mailbox_over_pop3(pop3_port)
        pop3.stop()
        assert len(before) == 3

        # The backup, as docs/deploy.md takes it (in the container: redis-cli --rdb /data/backup.rdb).
        backup = take_backup(in_service, tmp_path / "backup.rdb")
        # Mail after the backup is not in it.
        await store.mailboxes.deliver(USER, new_queue_id(), message(99))
    finally:
        await store.close()

    assert redis_cli(restored, "DBSIZE") == "0"
    done = restore(backup, restored, tmp_path)
    assert done.returncode == 0, done.stderr
    assert "keys restored" in done.stderr
    assert not (tmp_path / "restore").exists(), "the temporary copy is removed"
    # Restarted with its own configuration: the data comes back from its own append-only file, not from memory.
    restored.restart()
    assert redis_cli(restored, "CONFIG", "GET", "appendonly").split() == ["appendonly", "yes"]

    pop3 = start_service("pop3", POSTROOM_REDIS_URL=restored.url)
    assert mailbox_over_pop3(pop3_port, delete_first=True) == before
    # The restored Redis is a writable primary again: the DELE above took effect at QUIT.
    assert mailbox_over_pop3(pop3_port) == before[1:]
    pop3.stop()
    restored_store = Store.connect(restored.url, namespace)
    try:
        user = await restored_store.accounts.get_user(USER)
    finally:
        await restored_store.close()
    assert usage is not None and user is not None
    assert (user.quota, user.messages + 1, user.bytes + len(before[0][1]) + 2) == (
        usage.quota,
        usage.messages,
        usage.bytes,
    )


def test_restore_refuses_a_redis_that_holds_data(redis_pair: tuple[PrivateRedis, PrivateRedis], tmp_path: Path) -> None:
    source, target = redis_pair
    redis_cli(source, "SET", "from-backup", "1")
    backup = take_backup(source, tmp_path / "backup.rdb")
    redis_cli(target, "SET", "precious", "1")
    done = restore(backup, target, tmp_path)
    assert done.returncode == 1
    assert "RESTORE_FORCE=1" in done.stderr
    assert redis_cli(target, "GET", "precious") == "1"
    assert redis_cli(target, "EXISTS", "from-backup") == "0"
