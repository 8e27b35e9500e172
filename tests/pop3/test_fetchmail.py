"""A real client from Debian: fetchmail in keep mode (over STLS) and delete mode (over implicit TLS).

The test set-up installs it with `apt-get install fetchmail`; without it these tests are skipped.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from services.store import Store
from shared.tls import self_signed_pair
from tests.harness import ServiceProcess
from tests.pop3.conftest import PASSWORD, USER, deliver, message

FETCHMAIL = shutil.which("fetchmail")
pytestmark = pytest.mark.skipif(FETCHMAIL is None, reason="fetchmail is not installed (apt-get install fetchmail)")


def _port(env: dict[str, str], name: str) -> int:
    return int(env[name].rsplit(":", 1)[1])


def _rcfile(directory: Path, port: int, *, keep: bool, implicit_tls: bool, cert: Path, inbox: Path) -> Path:
    tls = "ssl" if implicit_tls else "sslproto tls1.2+"  # STLS is then required, not merely opportunistic
    rc = directory / "fetchmailrc"
    rc.write_text(
        "set no bouncemail\n"
        f"poll localhost with proto POP3 service {port} auth password timeout 20 uidl\n"
        f'    user "{USER}" there with password "{PASSWORD}" is "alice" here\n'
        f'    {"keep" if keep else "nokeep"} no rewrite {tls} sslcertck sslcertfile "{cert}"\n'
        f"    mda \"sh -c 'cat > $(mktemp {inbox}/msg.XXXXXX)'\"\n"
    )
    rc.chmod(0o600)
    return rc


async def _fetchmail(rc: Path, home: Path) -> tuple[int, str]:
    assert FETCHMAIL is not None
    env = {**os.environ, "HOME": str(home), "FETCHMAILHOME": str(home), "LC_ALL": "C"}
    # As root fetchmail locks /var/run/fetchmail.pid whatever FETCHMAILHOME says: a fetchmail of another test
    # worker or checkout then makes this one refuse to start ("another foreground fetchmail is running").
    proc = await asyncio.create_subprocess_exec(
        FETCHMAIL, "-v", "--nodetach", "--nosyslog", "-f", str(rc), "--idfile", str(home / "fetchids"),
        "--pidfile", str(home / "fetchmail.pid"),
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, output.decode(errors="replace")


def _inbox(inbox: Path) -> list[bytes]:
    return sorted(path.read_bytes() for path in inbox.iterdir())


@pytest.fixture
def tls_pair(tmp_path: Path) -> tuple[Path, Path]:
    directory = tmp_path / "tls"
    directory.mkdir()
    return self_signed_pair("localhost", directory)


async def test_fetchmail_keep_mode_over_stls(
    start_service: Callable[..., ServiceProcess],
    base_env: dict[str, str],
    tls_pair: tuple[Path, Path],
    tmp_path: Path,
    account: str,
    store: Store,
) -> None:
    cert, key = tls_pair
    start_service("pop3", POSTROOM_TLS_CERT=str(cert), POSTROOM_TLS_KEY=str(key), POSTROOM_POP3_LOCK_TTL="5s")
    bodies = [message(f"keep {i}", f"line {i}\r\n.dotted\r\n") for i in range(3)]
    uids = await deliver(store, *bodies)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    rc = _rcfile(
        tmp_path, _port(base_env, "POSTROOM_POP3_LISTEN"), keep=True, implicit_tls=False, cert=cert, inbox=inbox
    )

    status, log = await _fetchmail(rc, tmp_path)
    assert status == 0, log
    assert "STLS" in log
    got = _inbox(inbox)
    assert len(got) == 3
    for body in bodies:
        # fetchmail adds its own Received: header on top; the message itself arrives intact (dots unstuffed).
        assert any(item.replace(b"\r\n", b"\n").endswith(body.replace(b"\r\n", b"\n")) for item in got), log
    assert [m.uid for m in await store.mailboxes.snapshot(USER)] == uids

    # Second run: UIDL tells fetchmail it has seen them all; a new message is the only one fetched.
    await deliver(store, message("keep new"))
    status, log = await _fetchmail(rc, tmp_path)
    assert status == 0, log
    assert len(_inbox(inbox)) == 4
    assert len(await store.mailboxes.snapshot(USER)) == 4


async def test_fetchmail_delete_mode_over_pop3s(
    start_service: Callable[..., ServiceProcess],
    base_env: dict[str, str],
    tls_pair: tuple[Path, Path],
    tmp_path: Path,
    account: str,
    store: Store,
) -> None:
    cert, key = tls_pair
    service = start_service("pop3", POSTROOM_TLS_CERT=str(cert), POSTROOM_TLS_KEY=str(key), POSTROOM_POP3_LOCK_TTL="5s")
    await deliver(store, *(message(f"delete {i}", "x" * 100_000 + "\r\n") for i in range(4)))
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    rc = _rcfile(
        tmp_path, _port(base_env, "POSTROOM_POP3S_LISTEN"), keep=False, implicit_tls=True, cert=cert, inbox=inbox
    )

    status, log = await _fetchmail(rc, tmp_path)
    assert status == 0, log
    assert len(_inbox(inbox)) == 4
    assert await store.mailboxes.snapshot(USER) == []
    # Nothing left: fetchmail's "no mail" status.
    status, log = await _fetchmail(rc, tmp_path)
    assert status == 1, log
    assert service.alive()
