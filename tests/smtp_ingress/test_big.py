"""Large messages: spooled to a file and published frame by frame, byte-exact, and never half-queued (invariant 1)."""

from __future__ import annotations

import asyncio
import random
import smtplib
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.smtp import Session
from prometheus_client import REGISTRY

from services.smtp_ingress import replies
from services.smtp_ingress.app import IngressApp
from services.smtp_ingress.handler import IngressHandler
from services.smtp_ingress.session import IngressEnvelope
from shared.envelope import Envelope
from shared.errors import ConfigError
from shared.spool import MessageSpool
from tests.faults.proxy import FaultProxy, broker_proxy
from tests.helpers import wait_until_sync
from tests.smtp_ingress.conftest import ALICE, RunningIngress, ingress_settings, queue_depth, read_queue, send
from tests.smtp_ingress.rawsmtp import RawSMTP
from tests.smtp_ingress.test_hardening import open_transaction
from tests.smtp_ingress.test_shield import FakeServer

MIB = 1024 * 1024


def big_text(size: int, seed: int = 1) -> bytes:
    """A CRLF message of about `size` bytes; many lines start with a dot, some are empty."""
    rnd = random.Random(seed)
    pool = [bytes(rnd.choice(b"abcdefghij .:-") for _ in range(rnd.randint(0, 200))) for _ in range(500)]
    pool += [b"." + line for line in pool[:50]]
    lines = [b"Subject: big", b""]
    total = 0
    while total < size:
        line = rnd.choice(pool)
        lines.append(line)
        total += len(line) + 2
    return b"\r\n".join(lines) + b"\r\n"


def stuffed(text: bytes) -> bytes:
    return text.replace(b"\r\n.", b"\r\n..")


def test_big_message_arrives_byte_exact(ingress: RunningIngress, namespace: str) -> None:
    """5 MiB sent in odd-sized pieces (so reads end anywhere: inside CRLFs, before dots) and pipelined with the
    next commands: the queued body is our Received: header and then exactly the text."""
    text = big_text(5 * MIB)
    wire = stuffed(text) + b".\r\nRSET\r\nNOOP\r\n"
    rnd = random.Random(2)
    with RawSMTP(ingress.port("smtp"), timeout=60) as raw:
        open_transaction(raw)
        start = 0
        while start < len(wire):
            end = start + rnd.choice((1, 2, 3, 7, 4093, 65536, 300_001))
            raw.send(wire[start:end])
            start = end
        reply = raw.reply()
        assert reply.startswith("250 2.0.0 Ok: queued as "), reply
        assert raw.reply() == str(replies.OK)
        assert raw.reply() == str(replies.OK)
    [message] = read_queue(namespace, timeout=30)
    queue_id = Envelope.from_headers(message.headers).queue_id
    header, _, rest = message.body.partition(b"\r\n\tfor <alice@local.test>;\r\n")
    assert header.startswith(b"Received: ") and f"id {queue_id}".encode() in header
    assert rest.split(b"\r\n", 1)[1] == text  # after the Received: header's date line


def test_pipelined_commands_after_the_final_dot_in_the_same_packet(ingress: RunningIngress, namespace: str) -> None:
    with RawSMTP(ingress.port("smtp")) as raw:
        open_transaction(raw)
        raw.send(b"Subject: x\r\n\r\nbody\r\n.\r\nNOOP\r\nQUIT\r\n")
        assert raw.reply().startswith("250 2.0.0 Ok: queued as ")
        assert raw.reply() == str(replies.OK)
        assert raw.reply() == str(replies.BYE)
    [message] = read_queue(namespace)
    assert message.body.endswith(b"\r\n\r\nbody\r\n")


class Sender:
    """One SMTP transaction in a thread, so the test can act on the broker while the ingress publishes."""

    def __init__(self, port: int, body: bytes) -> None:
        self.result: tuple[int, bytes] | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(port, body), daemon=True)
        self.thread.start()

    def _run(self, port: int, body: bytes) -> None:
        try:
            with smtplib.SMTP("127.0.0.1", port, timeout=60) as client:
                client.ehlo("client.example.org")
                self.result = send(client, "sender@remote.example", [ALICE], body)
        except BaseException as exc:
            self.error = exc

    def reply(self) -> str:
        self.thread.join(60)
        assert self.error is None and self.result is not None, self.error
        code, text = self.result
        return f"{code} {text.decode()}"


def publishing(ingress: RunningIngress) -> Callable[[], bool]:
    return lambda: bool(ingress.app.handler.inflight)


def check_recovers(ingress: RunningIngress, namespace: str, proxy: FaultProxy) -> None:
    """Nothing of the interrupted message was queued; the next large message is queued whole."""
    proxy.enable()
    proxy.resume()
    wait_until_sync(ingress.ready, 30, what="broker reconnected")
    text = big_text(3 * MIB, seed=9)
    assert Sender(ingress.port("smtp"), text).reply().startswith("250 2.0.0 Ok: queued as ")
    messages = read_queue(namespace, count=2, timeout=3)
    assert len(messages) == 1 and messages[0].body.endswith(text)
    assert queue_depth(namespace) == 0


def test_broker_lost_in_the_middle_of_a_large_publish_is_451_and_recovers(
    make_ingress: Callable[..., RunningIngress], accounts: None, namespace: str
) -> None:
    """The broker got the Basic.Publish, the header and some body frames when the connection broke."""
    with broker_proxy() as proxy:
        ingress = make_ingress(amqp_url=proxy.amqp_url, smtp_publish_timeout=30)
        proxy.stall_after(1 * MIB)  # the message is far larger than that and than the sockets' buffers
        sender = Sender(ingress.port("smtp"), big_text(24 * MIB))
        wait_until_sync(lambda: proxy.stalled() and publishing(ingress)(), 60, what="publish stalled part way")
        proxy.cut()
        assert sender.reply() == str(replies.TEMPORARY_FAILURE)
        check_recovers(ingress, namespace, proxy)


def test_publish_timeout_in_the_middle_of_a_large_publish_drops_the_connection(
    make_ingress: Callable[..., RunningIngress], accounts: None, namespace: str
) -> None:
    """Timing out part way leaves the channel inside an unfinished content: the ingress must drop the connection
    (the broker discards the partial message) rather than put the next publish's frames after it."""
    with broker_proxy() as proxy:
        ingress = make_ingress(amqp_url=proxy.amqp_url, smtp_publish_timeout=3)
        before = REGISTRY.get_sample_value("postroom_smtp_publish_failures_total", {"reason": "timeout"}) or 0
        proxy.stall_after(1 * MIB)
        assert Sender(ingress.port("smtp"), big_text(24 * MIB)).reply() == str(replies.TEMPORARY_FAILURE)
        assert proxy.stalled()
        assert REGISTRY.get_sample_value("postroom_smtp_publish_failures_total", {"reason": "timeout"}) == before + 1
        assert not ingress.ready()  # dropped at once, not left for the next publish to trip over
        check_recovers(ingress, namespace, proxy)


def test_small_and_large_publishes_share_the_channel(ingress: RunningIngress, namespace: str) -> None:
    """Frames of concurrent publishes never interleave: every message arrives whole."""
    texts = [big_text(2 * MIB, seed=n) if n % 2 else big_text(2000, seed=n) for n in range(6)]
    senders = [Sender(ingress.port("smtp"), text) for text in texts]
    assert all(sender.reply().startswith("250 ") for sender in senders)
    bodies = [message.body for message in read_queue(namespace, count=6, timeout=30)]
    assert len(bodies) == 6
    assert all(sum(body.endswith(text) for body in bodies) == 1 for text in texts)


def test_spool_failure_is_451_after_the_data_and_the_data_is_never_read_as_commands(
    make_ingress: Callable[..., RunningIngress], accounts: None, namespace: str, tmp_path: Path
) -> None:
    spool_dir = tmp_path / "spool"
    spool_dir.mkdir()
    ingress = make_ingress(smtp_spool_dir=str(spool_dir))
    spool_dir.rmdir()  # the file a large message needs cannot be made now
    with RawSMTP(ingress.port("smtp")) as raw:
        open_transaction(raw)
        raw.send(b"Subject: x\r\n\r\n" + b"NOOP\r\n" * (MIB // 3) + b".\r\nQUIT\r\n")
        assert raw.reply() == str(replies.TEMPORARY_FAILURE)
        assert raw.reply() == str(replies.BYE)
    assert queue_depth(namespace) == 0


def test_unusable_spool_dir_stops_the_start(namespace: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="POSTROOM_SMTP_SPOOL_DIR"):
        IngressApp(ingress_settings(namespace, smtp_spool_dir=str(tmp_path / "missing")))


async def test_submission_headers_look_at_a_spooled_file(namespace: str, tmp_path: Path) -> None:
    """Message-ID and Date are added for an authenticated sender only when the spooled header block lacks them."""
    handler = IngressHandler(ingress_settings(namespace), None, None, None)  # type: ignore[arg-type]
    session: Any = Session(asyncio.get_running_loop())
    session.authenticated, session.auth_data, session.extended_smtp = True, ALICE, True
    envelope = IngressEnvelope()
    envelope.mail_from, envelope.rcpt_tos = ALICE, ["bob@local.test"]
    for header, added in ((b"Subject: x\r\n", True), (b"Message-ID: <a@b>\r\nDate: now\r\n", False)):
        spool = MessageSpool(str(tmp_path), memory_limit=100)
        spool.write(header + b"\r\n" + b"body line\r\n" * 1000)
        assert not spool.in_memory
        prefix, _, _ = handler._prepare(FakeServer(), session, envelope, spool, "01ABCDEFGHJKMNPQRSTVWXYZ00")
        spool.close()
        assert prefix.startswith(b"Received: ")
        assert (b"\r\nMessage-ID: <01ABCDEFGHJKMNPQRSTVWXYZ00@" in prefix) is added
        assert (b"\r\nDate: " in prefix) is added
