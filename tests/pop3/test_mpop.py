"""A second real client from Debian: mpop, logging in with AUTH PLAIN (RFC 5034) over STLS, keep then delete.

The test set-up installs it with `apt-get install mpop`; without it this test is skipped.
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

MPOP = shutil.which("mpop")
pytestmark = pytest.mark.skipif(MPOP is None, reason="mpop is not installed (apt-get install mpop)")


async def _mpop(config: Path, *args: str) -> tuple[int, str]:
    assert MPOP is not None
    proc = await asyncio.create_subprocess_exec(
        MPOP, "-C", str(config), *args, "postroom",
        env={**os.environ, "HOME": str(config.parent)},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, output.decode(errors="replace")


async def test_mpop_auth_plain_keep_then_delete(
    start_service: Callable[..., ServiceProcess],
    base_env: dict[str, str],
    tmp_path: Path,
    account: str,
    store: Store,
) -> None:
    cert, key = self_signed_pair("localhost", tmp_path)
    start_service("pop3", POSTROOM_TLS_CERT=str(cert), POSTROOM_TLS_KEY=str(key), POSTROOM_POP3_LOCK_TTL="5s")
    await deliver(store, message("mpop 1", ".starts with a dot\r\n"), message("mpop 2"))
    mbox = tmp_path / "inbox.mbox"
    mbox.touch()
    config = tmp_path / "mpoprc"

    def write_config(keep: bool) -> None:
        config.write_text(
            "account postroom\n"
            "host 127.0.0.1\n"
            f"port {base_env['POSTROOM_POP3_LISTEN'].rsplit(':', 1)[1]}\n"
            f"user {USER}\n"
            f"password {PASSWORD}\n"
            "auth plain\n"
            "tls on\n"
            "tls_starttls on\n"
            f"tls_trust_file {cert}\n"
            "tls_host_override localhost\n"
            f"delivery mbox {mbox}\n"
            f"uidls_file {tmp_path / 'uidls'}\n"
            f"keep {'on' if keep else 'off'}\n"
            "only_new off\n"
        )
        config.chmod(0o600)

    write_config(keep=True)
    status, log = await _mpop(config, "--debug")
    assert status == 0, log
    assert "AUTH PLAIN" in log and "STLS" in log
    text = mbox.read_text()
    assert text.count("Subject: mpop") == 2
    assert "\n.starts with a dot\n" in text
    assert len(await store.mailboxes.snapshot(USER)) == 2

    write_config(keep=False)
    status, log = await _mpop(config)
    assert status == 0, log
    assert await store.mailboxes.snapshot(USER) == []
