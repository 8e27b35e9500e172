"""The content filter against a real rspamd (Debian's package, a private instance): verdicts, changes, failures."""

from __future__ import annotations

import asyncio
import smtplib
import socket
import struct
import threading
from collections.abc import Callable, Iterator
from email.utils import formatdate
from pathlib import Path
from types import SimpleNamespace

import pytest

from services.smtp_ingress import metrics, replies
from services.smtp_ingress.checks import Checks
from services.smtp_ingress.rspamd import Verdict
from shared.spool import MessageSpool
from tests.delivery.dnsserver import DNSServer, Zone
from tests.helpers import wait_until_sync
from tests.rspamd_private import PrivateRspamd, available
from tests.smtp_ingress.conftest import ALICE, BOB, PASSWORD, RunningIngress, ingress_settings, read_queue
from tests.smtp_ingress.rawsmtp import RawSMTP
from tests.smtp_ingress.test_hardening import open_transaction

GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
# rspamd's test patterns (enable_test_patterns): the same string asking for another action.
GTUBE_ADD_HEADER = "Y" + GTUBE[1:]
GTUBE_REWRITE_SUBJECT = "Z" + GTUBE[1:]


def message(body: str, subject: str = "lunch", extra: str = "") -> bytes:
    # Dated now: rspamd scores an old Date (DATE_IN_PAST), which would tip a clean message into greylist.
    return (
        f"From: someone@remote.test\r\nTo: bob@local.test\r\nSubject: {subject}\r\n{extra}"
        f"Message-ID: <m1@remote.test>\r\nDate: {formatdate(usegmt=True)}\r\n\r\n"
        f"{body}\r\n"
    ).encode()


CLEAN = message("Shall we have lunch at noon?")


@pytest.fixture(scope="module")
def rspamd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateRspamd]:
    reason = available()
    if reason is not None:
        pytest.skip(reason)
    dns = DNSServer(Zone()).start()  # every name NXDOMAIN, at once: no lookup leaves the machine
    server = PrivateRspamd(tmp_path_factory.mktemp("rspamd"), dns.nameserver)
    try:
        yield server.start()
    finally:
        server.stop()
        dns.stop()


def _filtered(make: Callable[..., RunningIngress], url: str, **overrides: object) -> RunningIngress:
    return make(rspamd_url=url, trusted_networks="", **overrides)


def _action(action: str) -> float:
    return float(metrics.FILTER_ACTIONS.labels(action)._value.get())


def test_gtube_is_rejected_and_never_queued(
    make_ingress: Callable[..., RunningIngress], accounts: None, namespace: str, rspamd: PrivateRspamd
) -> None:
    ingress = _filtered(make_ingress, rspamd.url)
    before = _action("reject")
    with ingress.smtp("smtp") as client, pytest.raises(smtplib.SMTPDataError) as refused:
        client.sendmail("someone@remote.test", [BOB], message(GTUBE))
    error = refused.value.smtp_error
    text = error.decode() if isinstance(error, bytes) else error
    assert (refused.value.smtp_code, text) == (554, str(replies.FILTER_REJECT)[4:])
    assert _action("reject") == before + 1
    assert read_queue(namespace, count=1, timeout=1) == []


def test_a_clean_message_flows_and_a_forged_spam_header_goes(
    make_ingress: Callable[..., RunningIngress], accounts: None, namespace: str, rspamd: PrivateRspamd
) -> None:
    ingress = _filtered(make_ingress, rspamd.url)
    before = _action("no_action")
    with ingress.smtp("smtp") as client:
        assert client.sendmail("someone@remote.test", [BOB], message("See you.", extra="X-Spam: No\r\n")) == {}
    [queued] = read_queue(namespace)
    assert b"See you." in queued.body and b"X-Spam" not in queued.body  # rspamd's milter.remove_headers
    assert queued.body.startswith(b"Received: ")
    assert _action("no_action") == before + 1


def test_add_header_and_rewrite_subject_change_the_message(
    make_ingress: Callable[..., RunningIngress], accounts: None, namespace: str, rspamd: PrivateRspamd
) -> None:
    ingress = _filtered(make_ingress, rspamd.url)
    with ingress.smtp("smtp") as client:
        assert client.sendmail("someone@remote.test", [BOB], message(GTUBE_ADD_HEADER)) == {}
        assert client.sendmail("someone@remote.test", [BOB], message(GTUBE_REWRITE_SUBJECT, subject="cheap")) == {}
    marked, rewritten = read_queue(namespace, count=2)
    head = marked.body.split(b"\r\n\r\n", 1)[0]
    assert b"\r\nX-Spam: Yes\r\n" in head + b"\r\n"
    head = rewritten.body.split(b"\r\n\r\n", 1)[0]
    subjects = [line for line in head.split(b"\r\n") if line.lower().startswith(b"subject:")]
    assert len(subjects) == 1 and subjects[0] != b"Subject: cheap" and b"cheap" in subjects[0]


def _large(text: str) -> bytes:
    """A multipart message over 1 MiB (so the ingress spools it to a file): a short text, then an attachment."""
    attachment = "\r\n".join(["QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo0MjQyNDI0MjQyNDI0MjQyNDI0MjQyNDI0MjQy"] * 20_000)
    return (
        "From: someone@remote.test\r\nTo: bob@local.test\r\nSubject: report\r\nMIME-Version: 1.0\r\n"
        f"Message-ID: <m2@remote.test>\r\nDate: {formatdate(usegmt=True)}\r\n"
        'Content-Type: multipart/mixed; boundary="b1"\r\n\r\n'
        f"--b1\r\nContent-Type: text/plain\r\n\r\n{text}\r\n"
        "--b1\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n"
        # Without a disposition rspamd adds CTYPE_MISSING_DISPOSITION (4.0), a hair from its greylist threshold.
        'Content-Disposition: attachment; filename="report.bin"\r\n\r\n'
        f"{attachment}\r\n--b1--\r\n"
    ).encode()


def test_a_large_message_is_streamed_to_rspamd(
    make_ingress: Callable[..., RunningIngress], accounts: None, namespace: str, rspamd: PrivateRspamd
) -> None:
    ingress = _filtered(make_ingress, rspamd.url)
    with ingress.smtp("smtp") as client:
        assert client.sendmail("someone@remote.test", [BOB], _large("The report is attached.")) == {}
        with pytest.raises(smtplib.SMTPDataError) as refused:
            client.sendmail("someone@remote.test", [BOB], _large(GTUBE))
        assert refused.value.smtp_code == 554
    [queued] = read_queue(namespace)
    assert len(queued.body) > 1024 * 1024 and queued.body.endswith(b"\r\n--b1--\r\n")


def test_submission_is_filtered_only_when_asked(
    make_ingress: Callable[..., RunningIngress], accounts: None, rspamd: PrivateRspamd
) -> None:
    for submission, expected in ((False, 250), (True, 554)):
        ingress = _filtered(make_ingress, rspamd.url, rspamd_submission=submission)
        with ingress.smtp("smtps") as client:
            client.login(ALICE, PASSWORD)
            client.mail(ALICE)
            client.rcpt(BOB)
            assert client.data(message(GTUBE))[0] == expected


class Silent:
    """A TCP listener that reads requests and never answers: a hung rspamd."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.accepted = threading.Event()
        self.clients: list[socket.socket] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        try:
            while True:
                client, _ = self.sock.accept()
                self.clients.append(client)
                self.accepted.set()
        except OSError:
            return

    def close(self) -> None:
        for client in self.clients:
            client.close()
        self.sock.close()


@pytest.fixture
def silent() -> Iterator[Silent]:
    server = Silent()
    yield server
    server.close()


def _closed_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as sock:
        return int(sock.getsockname()[1])


def test_rspamd_down_or_slow_is_a_451_or_let_through(
    make_ingress: Callable[..., RunningIngress], accounts: None, namespace: str, silent: Silent
) -> None:
    errors = _action("error")
    for url in (f"http://127.0.0.1:{_closed_port()}", f"http://127.0.0.1:{silent.port}"):
        ingress = _filtered(make_ingress, url, rspamd_timeout=0.5)
        with ingress.smtp("smtp") as client, pytest.raises(smtplib.SMTPDataError) as refused:
            client.sendmail("someone@remote.test", [BOB], CLEAN)
        assert refused.value.smtp_code == 451 and b"4.7.1 Content filter unavailable" in refused.value.smtp_error
    assert _action("error") == errors + 2
    assert read_queue(namespace, count=1, timeout=1) == []
    ingress = _filtered(make_ingress, f"http://127.0.0.1:{_closed_port()}", rspamd_failure="accept")
    with ingress.smtp("smtp") as client:
        assert client.sendmail("someone@remote.test", [BOB], CLEAN) == {}
    assert len(read_queue(namespace)) == 1


def test_a_client_gone_during_the_scan_leaves_nothing_queued(
    make_ingress: Callable[..., RunningIngress], accounts: None, namespace: str, silent: Silent
) -> None:
    """The worst moment of the filter step: the client resets the connection while rspamd is still looking."""
    ingress = _filtered(make_ingress, f"http://127.0.0.1:{silent.port}", rspamd_timeout=30)
    raw = RawSMTP(ingress.port("smtp"))
    open_transaction(raw)
    raw.send(b"Subject: gone\r\n\r\nbody\r\n.\r\n")
    assert silent.accepted.wait(10)
    raw.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    raw.close()
    registry, handler = ingress.app.server.registry, ingress.app.handler
    wait_until_sync(lambda: not registry.sessions and not handler.inflight, 10, what="session gone")
    assert read_queue(namespace, count=1, timeout=1) == []


class _Rspamd:
    def __init__(self, action: str) -> None:
        self.action = action

    async def check(self, spool: MessageSpool, envelope: object) -> Verdict:
        return Verdict(self.action)


@pytest.mark.parametrize(
    ("action", "expected"),
    [
        ("soft reject", replies.FILTER_TEMPFAIL),
        ("greylist", replies.FILTER_TEMPFAIL),
        ("reject", replies.FILTER_REJECT),
        ("no action", None),
        ("some custom action", None),
    ],
)
def test_actions_map_to_replies(action: str, expected: replies.Reply | None, tmp_path: Path) -> None:
    async def check() -> replies.Reply | None:
        checks = Checks(ingress_settings("unused", rspamd_url="http://127.0.0.1:1"), None)  # type: ignore[arg-type]
        checks.rspamd = _Rspamd(action)  # type: ignore[assignment]
        server = SimpleNamespace(client_ip="192.0.2.1")
        session = SimpleNamespace(authenticated=False, host_name="client.example.org")
        envelope = SimpleNamespace(mail_from="a@remote.test", rcpt_tos=[BOB])
        reply, spool = await checks.content(server, session, envelope, MessageSpool.of(CLEAN), "Q1")
        spool.close()
        return reply

    assert asyncio.run(check()) == expected
