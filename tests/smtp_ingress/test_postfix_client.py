"""A real MTA as the sending peer: Postfix's smtp client relays to the ingress, with DSN parameters.

Postfix's client speaks DSN (it passes RET, ENVID, NOTIFY and ORCPT to a server that offers DSN) but not BDAT
(Postfix offers CHUNKING as a server only): with CHUNKING offered it sends DATA, which must go on working.

A private Postfix instance (its own configuration, queue and log in a scratch directory, no listening port: mail
enters with its `sendmail -C`) relays everything to the ingress as its relayhost. The test set-up installs Postfix
(`apt-get install postfix`, never started as a system service); without it, or without root (Postfix's master
needs it), the test is skipped.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.envelope import Envelope
from tests.smtp_ingress.conftest import ALICE, RunningIngress, read_queue

POSTFIX = shutil.which("postfix")
pytestmark = pytest.mark.skipif(
    POSTFIX is None or os.geteuid() != 0, reason="Postfix (apt-get install postfix) and root are needed"
)


# -i: a lone "." is text; -N, -R, -V: NOTIFY, RET, ENVID (Postfix's sendmail options for DSN).
SENDMAIL = ["sendmail", "-i", "-N", "success,failure", "-R", "hdrs", "-V", "Env+Id 42"]


def postconf(name: str) -> str:
    return subprocess.run(["postconf", "-dh", name], capture_output=True, text=True, check=True).stdout.strip()


@pytest.fixture
def scratch() -> Iterator[Path]:
    # Postfix's own processes run as the postfix user: the directory must be reachable for it (pytest's is 0700).
    root = Path(tempfile.mkdtemp(prefix="postroom-postfix-"))
    root.chmod(0o755)
    yield root
    shutil.rmtree(root, ignore_errors=True)


def configure(root: Path, relay_port: int) -> Path:
    conf = root / "conf"
    conf.mkdir()
    main = {
        "compatibility_level": "3.6",
        "queue_directory": root / "queue",
        "data_directory": root / "data",
        "mail_owner": "postfix",
        "setgid_group": "postdrop",
        "myhostname": "client.postfix.test",
        "mydomain": "postfix.test",
        "myorigin": "$myhostname",
        "mydestination": "",
        "inet_interfaces": "loopback-only",
        "inet_protocols": "ipv4",
        "relayhost": f"[127.0.0.1]:{relay_port}",
        "alias_maps": "",
        "alias_database": "",
        "local_transport": "error:no local delivery",
        "smtp_dns_support_level": "disabled",
        "smtp_tls_security_level": "none",
        "biff": "no",
        "append_dot_mydomain": "no",
        "maillog_file": root / "maillog",
        "maillog_file_prefixes": root,
    }
    (conf / "main.cf").write_text("".join(f"{key} = {value}\n" for key, value in main.items()))
    # No smtpd: nothing listens; mail comes in through sendmail → postdrop → pickup.
    services = [
        "pickup unix n - n 60 1 pickup",
        "cleanup unix n - n - 0 cleanup",
        "qmgr unix n - n 300 1 qmgr",
        "rewrite unix - - n - - trivial-rewrite",
        "bounce unix - - n - 0 bounce",
        "defer unix - - n - 0 bounce",
        "trace unix - - n - 0 bounce",
        "flush unix n - n 1000? 0 flush",
        "proxymap unix - - n - - proxymap",
        "smtp unix - - n - - smtp",
        "relay unix - - n - - smtp",
        "showq unix n - n - - showq",
        "error unix - - n - - error",
        "retry unix - - n - - error",
        "anvil unix - - n - 1 anvil",
        "scache unix - - n - 1 scache",
        "postlog unix-dgram n - n - 1 postlogd",
    ]
    (conf / "master.cf").write_text("\n".join(services) + "\n")
    (root / "queue").mkdir(mode=0o755)
    subprocess.run(["postfix", "-c", str(conf), "check"], check=True, timeout=60)
    return conf


def test_postfix_relays_to_the_ingress_with_its_dsn_parameters(
    ingress: RunningIngress, namespace: str, scratch: Path
) -> None:
    conf = configure(scratch, ingress.port("smtp"))
    # Lines a DATA client must stuff or could smuggle with, and a body of a few hundred KiB.
    body = b"".join(b"%06d " % i + b"z" * 90 + b"\n" for i in range(4000))
    message = (
        b"From: someone@client.postfix.test\nTo: alice@local.test\nSubject: relayed by Postfix\n\n"
        b".leading dot\n.\n..two dots\n" + body + b"last line\n"
    )
    with (scratch / "master.log").open("ab") as log:
        master = subprocess.Popen(
            [str(Path(postconf("daemon_directory")) / "master"), "-c", str(conf)], stdout=log, stderr=log
        )
    try:
        subprocess.run(
            [*SENDMAIL, "-C", str(conf), "-f", "someone@client.postfix.test", ALICE],
            input=message,
            check=True,
            timeout=60,
        )
        [queued] = read_queue(namespace, timeout=60)
    finally:
        master.terminate()  # the master ends its own children
        master.wait(30)
    envelope = Envelope.from_headers(queued.headers)
    assert (envelope.mail_from, envelope.recipients) == ("someone@client.postfix.test", (ALICE,))
    text = queued.body.split(b"\r\n\r\n", 1)[1]
    assert text == (b".leading dot\n.\n..two dots\n" + body + b"last line\n").replace(b"\n", b"\r\n")
    assert (envelope.dsn_ret, envelope.dsn_envid) == ("HDRS", "Env+Id 42")
    assert envelope.dsn_recipients == ((ALICE, "SUCCESS,FAILURE", f"rfc822;{ALICE}"),)
