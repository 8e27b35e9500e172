"""A private Dovecot (Debian's dovecot-core, -pop3d, -lmtpd) for migration tests: its own config, base_dir and
state_dir in a temporary directory, POP3 and LMTP on free loopback ports, maildirs owned by `nobody`.

Never the system's Dovecot: it is started with `-c` on its own config and stopped by its process group.
The test set-up installs the packages (Makefile TEST_TOOLS); without them the tests that use this are skipped.
"""

from __future__ import annotations

import os
import poplib
import pwd
import shutil
import signal
import smtplib
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from tests.helpers import free_port

DOVECOT = shutil.which("dovecot") or shutil.which("dovecot", path="/usr/sbin")
INSTALLED = DOVECOT is not None and os.path.exists("/usr/lib/dovecot/pop3") and os.path.exists("/usr/lib/dovecot/lmtp")
PASSWORD = "dovecot-test-password"
MAIL_USER = "nobody"


class PrivateDovecot:
    """One Dovecot master with POP3 and LMTP; users are `name@domain`, their maildir is `mail/<name>`."""

    def __init__(self, users: list[str], extra_config: str = "") -> None:
        self.root = Path(tempfile.mkdtemp(prefix="postroom-dovecot-"))
        self.root.chmod(0o755)  # Dovecot's unprivileged users must reach the maildirs in here
        self.mail = self.root / "mail"
        self.mail.mkdir()
        self.users = users
        self.pop3_port = free_port()
        self.lmtp_port = free_port()
        self.extra_config = extra_config
        self.proc: subprocess.Popen[bytes] | None = None

    def maildir(self, user: str) -> Path:
        return self.mail / user.split("@")[0]

    def _config(self) -> Path:
        owner = pwd.getpwnam(MAIL_USER)
        lines = "".join(f"{user}:{{PLAIN}}{PASSWORD}::::::\n" for user in self.users)
        (self.root / "passwd").write_text(lines)
        config = self.root / "dovecot.conf"
        config.write_text(
            f"""base_dir = {self.root / "run"}
state_dir = {self.root / "state"}
instance_name = postroom-test-{self.pop3_port}
protocols = pop3 lmtp
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain
log_path = {self.root / "dovecot.log"}
default_internal_user = dovecot
default_login_user = dovenull
first_valid_uid = {owner.pw_uid}
first_valid_gid = {owner.pw_gid}
mail_location = maildir:{self.mail}/%n
passdb {{
  driver = passwd-file
  args = scheme=PLAIN {self.root / "passwd"}
}}
userdb {{
  driver = static
  args = uid={owner.pw_uid} gid={owner.pw_gid} home={self.mail}/%n
}}
service pop3-login {{
  inet_listener pop3 {{
    address = 127.0.0.1
    port = {self.pop3_port}
  }}
}}
service lmtp {{
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {self.lmtp_port}
  }}
}}
{self.extra_config}
"""
        )
        return config

    def start(self, timeout: float = 30) -> PrivateDovecot:
        assert DOVECOT is not None
        owner = pwd.getpwnam(MAIL_USER)
        for user in self.users:
            if not self.maildir(user).exists():
                for sub in ("cur", "new", "tmp"):
                    (self.maildir(user) / sub).mkdir(parents=True)
            for path in [self.maildir(user), *self.maildir(user).rglob("*")]:
                os.chown(path, owner.pw_uid, owner.pw_gid)
        config = self._config()
        log = (self.root / "master.log").open("ab")
        self.proc = subprocess.Popen([DOVECOT, "-F", "-c", str(config)], stdout=log, stderr=log, start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while not (_banner(self.pop3_port, b"+OK") and _banner(self.lmtp_port, b"220")):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"Dovecot did not start: {self.log()}")
            time.sleep(0.1)
        return self

    def log(self) -> str:
        return "".join(p.read_text(errors="replace") for p in (self.root / "master.log", self.root / "dovecot.log")
                       if p.exists())  # fmt: skip

    def deliver(self, user: str, messages: list[bytes]) -> None:
        """Each message by LMTP, as an MTA hands mail to Dovecot (it adds Return-Path and Delivered-To)."""
        with smtplib.LMTP("127.0.0.1", self.lmtp_port, timeout=20) as lmtp:
            for message in messages:
                refused = lmtp.sendmail("sender@example.org", [user], message)
                assert not refused, refused

    def uidls_and_bodies(self, user: str) -> list[tuple[str, bytes]]:
        """UIDL and RETR of every message over Dovecot's POP3, leaving them on the server."""
        return pop3_messages(self.pop3_port, user, PASSWORD)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(20)
        shutil.rmtree(self.root, ignore_errors=True)


def pop3_messages(port: int, user: str, password: str) -> list[tuple[str, bytes]]:
    """(UIDL, message with CRLF line ends) of every message, in POP3 order, over plain POP3 on loopback; QUIT
    without DELE, so nothing is removed."""
    client = poplib.POP3("127.0.0.1", port, timeout=20)
    try:
        client.user(user)
        client.pass_(password)
        uidls = [line.decode().split(" ", 1)[1] for line in client.uidl()[1]]
        bodies = [b"\r\n".join(client.retr(n)[1]) + b"\r\n" for n in range(1, len(uidls) + 1)]
    finally:
        client.quit()
    return list(zip(uidls, bodies, strict=True))


def _banner(port: int, expected: bytes) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
            return sock.recv(512).startswith(expected)
    except OSError:
        return False
