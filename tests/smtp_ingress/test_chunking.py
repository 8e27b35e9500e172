"""CHUNKING (RFC 3030) through a real ingress: BDAT pipelined with the envelope, split anywhere, its errors."""

from __future__ import annotations

import base64
import socket
import struct
from collections.abc import Callable

import pytest

from services.smtp_ingress import replies
from shared.envelope import Envelope
from tests.faults.proxy import broker_proxy
from tests.helpers import client_tls, wait_until_sync
from tests.smtp_ingress.conftest import ALICE, BOB, PASSWORD, RunningIngress, read_queue
from tests.smtp_ingress.rawsmtp import RawSMTP

ENVELOPE = b"MAIL FROM:<sender@remote.example>\r\nRCPT TO:<alice@local.test>\r\n"
# A message whose bytes would end or smuggle a DATA message (bare LF, bare CR, a lone dot line), in two chunks.
FIRST = b"Subject: chunks\r\n\r\n.leading dot\r\n.\r\nbare LF\n.\nbare CR\r"
SECOND = b"\r\n.\r\nMAIL FROM:<smuggled@evil.example>\r\nlast line"
SESSION = (
    ENVELOPE + b"BDAT %d\r\n" % len(FIRST) + FIRST + b"BDAT %d LAST\r\n" % len(SECOND) + SECOND + b"NOOP\r\nQUIT\r\n"
)
# What DATA would have queued for the same text: line ends CRLF, nothing ended early, a final CRLF added.
EXPECTED = (
    b"Subject: chunks\r\n\r\n.leading dot\r\n.\r\nbare LF\r\n.\r\nbare CR\r\n\r\n"
    b".\r\nMAIL FROM:<smuggled@evil.example>\r\nlast line\r\n"
)
SESSION_REPLIES = [
    str(replies.SENDER_OK),
    str(replies.RECIPIENT_OK),
    str(replies.chunk_received(len(FIRST))),
    "queued",
    str(replies.OK),
    str(replies.BYE),
]


def replies_of(raw: RawSMTP, count: int) -> list[str]:
    return ["queued" if r.startswith("250 2.0.0 Ok: queued as ") else r for r in (raw.reply() for _ in range(count))]


def test_ehlo_offers_chunking(ingress: RunningIngress) -> None:
    for listener in ("smtp", "submission", "smtps"):
        with ingress.smtp(listener) as client:
            client.ehlo("client.example.org")
            assert client.has_extn("chunking"), listener


def test_pipelined_bdat_is_queued_with_line_ends_as_data(ingress: RunningIngress, namespace: str) -> None:
    with RawSMTP(ingress.port("smtp")) as raw:
        raw.reply()
        raw.command("EHLO client.example.org")
        raw.send(SESSION)
        assert replies_of(raw, 6) == SESSION_REPLIES
    [message] = read_queue(namespace)
    assert Envelope.from_headers(message.headers).recipients == (ALICE,)
    assert message.body.startswith(b"Received: ")
    assert message.body.endswith(b"\r\n" + EXPECTED)


def test_the_session_split_at_every_place_gives_the_same_message(ingress: RunningIngress, namespace: str) -> None:
    """Every cut of the pipelined bytes (inside commands, chunk sizes, CRLFs and chunk data) reads the same."""
    cuts = range(1, len(SESSION))
    for cut in cuts:
        with RawSMTP(ingress.port("smtp")) as raw:
            raw.reply()
            raw.command("EHLO client.example.org")
            raw.sock.sendall(SESSION[:cut])
            raw.sock.sendall(SESSION[cut:])  # two TCP sends: with TCP_NODELAY-less loopback, two reads mostly
            assert replies_of(raw, 6) == SESSION_REPLIES, cut
    messages = read_queue(namespace, count=len(cuts), timeout=30)
    assert len(messages) == len(cuts)
    assert all(m.body.endswith(b"\r\n" + EXPECTED) for m in messages)


def test_bdat_0_last_ends_the_message_and_an_empty_one_is_a_message(ingress: RunningIngress, namespace: str) -> None:
    with RawSMTP(ingress.port("smtp")) as raw:
        raw.reply()
        raw.command("EHLO client.example.org")
        raw.send(ENVELOPE + b"BDAT 6\r\nhello\nBDAT 0 LAST\r\n" + ENVELOPE + b"BDAT 0 LAST\r\n")
        assert replies_of(raw, 7) == [
            str(replies.SENDER_OK),
            str(replies.RECIPIENT_OK),
            str(replies.chunk_received(6)),
            "queued",
            str(replies.SENDER_OK),
            str(replies.RECIPIENT_OK),
            "queued",
        ]
    first, second = read_queue(namespace, count=2)
    assert first.body.endswith(b"\r\nhello\r\n")  # the bare LF was the last line's end
    assert second.body.startswith(b"Received: ") and b"\r\n\r\n" not in second.body  # our header, nothing else


@pytest.mark.parametrize(
    ("before", "expected"),
    [
        (b"", replies.NEED_MAIL),
        (b"MAIL FROM:<sender@remote.example>\r\n", replies.NEED_RCPT),
    ],
)
def test_bdat_outside_a_transaction_is_503_and_its_data_never_a_command(
    ingress: RunningIngress, namespace: str, before: bytes, expected: replies.Reply
) -> None:
    chunk = b"RCPT TO:<alice@local.test>\r\nDATA\r\n"
    with RawSMTP(ingress.port("smtp")) as raw:
        raw.reply()
        raw.command("EHLO client.example.org")
        raw.send(before + b"BDAT %d LAST\r\n" % len(chunk) + chunk + b"NOOP\r\n")
        got = [raw.reply() for _ in range(2 if before else 1)]
        assert got[-1] == str(expected)
        assert raw.reply() == str(replies.OK)  # the NOOP: the chunk's lines were not commands
    assert read_queue(namespace, timeout=0.5) == []


def test_bdat_before_ehlo_and_bad_arguments(ingress: RunningIngress) -> None:
    with RawSMTP(ingress.port("smtp")) as raw:
        raw.reply()
        raw.send(b"BDAT 4 LAST\r\nNOOPNOOP\r\n")
        assert raw.reply() == str(replies.NEED_HELO)
        assert raw.reply() == str(replies.OK)
        raw.command("EHLO client.example.org")
        for arg in (b"", b" x", b" 4 NOTLAST", b" -4"):
            assert raw.command((b"BDAT" + arg).decode()) == str(replies.BDAT_SYNTAX)


def test_data_after_bdat_is_503_and_the_transaction_goes_on(ingress: RunningIngress, namespace: str) -> None:
    with RawSMTP(ingress.port("smtp")) as raw:
        raw.reply()
        raw.command("EHLO client.example.org")
        raw.send(ENVELOPE + b"BDAT 9\r\nSubj: x\r\nDATA\r\nBDAT 2 LAST\r\nok")
        assert replies_of(raw, 5) == [
            str(replies.SENDER_OK),
            str(replies.RECIPIENT_OK),
            str(replies.chunk_received(9)),
            str(replies.DATA_AFTER_BDAT),
            "queued",
        ]
    [message] = read_queue(namespace)
    assert message.body.endswith(b"\r\nSubj: x\r\nok\r\n")


def test_too_big_is_refused_at_the_chunk_and_the_rest_is_503(
    make_ingress: Callable[..., RunningIngress], accounts: None, namespace: str
) -> None:
    ingress = make_ingress(max_message_size=2048)
    big = (b"x" * 498 + b"\r\n") * 2
    with RawSMTP(ingress.port("smtp")) as raw:
        raw.reply()
        assert "SIZE 2048" in raw.command("EHLO client.example.org")
        raw.send(ENVELOPE + b"BDAT 1000\r\n" + big + b"BDAT 3000\r\n" + big * 3 + b"BDAT 1000 LAST\r\n" + big)
        assert replies_of(raw, 5) == [
            str(replies.SENDER_OK),
            str(replies.RECIPIENT_OK),
            str(replies.chunk_received(1000)),
            str(replies.MESSAGE_TOO_BIG),
            str(replies.NEED_MAIL),  # RFC 3030 §2: the transaction failed; the pipelined chunk is read and refused
        ]
        assert raw.command("NOOP") == str(replies.OK)
    assert read_queue(namespace, timeout=0.5) == []


def test_line_too_long_in_bdat_as_in_data(ingress: RunningIngress, namespace: str) -> None:
    long_line = b"y" * 1000 + b"\r\n"
    with RawSMTP(ingress.port("smtp")) as raw:
        raw.reply()
        raw.command("EHLO client.example.org")
        raw.send(ENVELOPE + b"BDAT %d LAST\r\n" % len(long_line) + long_line)
        assert replies_of(raw, 3)[-1] == str(replies.DATA_LINE_TOO_LONG)


def test_bdat_on_submission_after_auth(ingress: RunningIngress, namespace: str) -> None:
    """smtplib speaks the envelope and AUTH; BDAT goes raw over its socket (smtplib has no BDAT)."""
    with ingress.smtp("smtps") as client:
        client.ehlo("client.example.org")
        client.login(ALICE, PASSWORD)
        assert client.mail(ALICE)[0] == 250 and client.rcpt(BOB)[0] == 250
        text = b"Subject: submitted in chunks\r\n\r\nHi Bob.\r\n"
        client.send(b"BDAT %d LAST\r\n" % len(text) + text)
        code, reply = client.getreply()
        assert code == 250 and reply.startswith(b"2.0.0 Ok: queued as "), reply
    [message] = read_queue(namespace)
    assert message.body.endswith(text) and b"Message-ID:" in message.body


def test_a_second_starttls_is_503(ingress: RunningIngress) -> None:
    with ingress.smtp("submission") as client:
        client.ehlo("client.example.org")
        client.starttls(context=client_tls())
        client.ehlo("client.example.org")
        code, reply = client.docmd("STARTTLS")
        assert f"{code} {reply.decode()}" == str(replies.TLS_ALREADY_ACTIVE)
        auth = base64.b64encode(f"\0{ALICE}\0{PASSWORD}".encode()).decode()
        assert client.docmd("AUTH", f"PLAIN {auth}")[0] == 235  # the session goes on, over the same TLS


def test_smtplib_still_sends_data_when_offered_chunking(ingress: RunningIngress, namespace: str) -> None:
    with ingress.smtp() as client:
        client.sendmail("sender@remote.example", [ALICE], b"Subject: plain DATA\r\n\r\nok\r\n")
    [message] = read_queue(namespace)
    assert message.body.endswith(b"\r\n\r\nok\r\n")


def test_disconnect_at_bdat_last_leaves_no_partial_message(ingress: RunningIngress, namespace: str) -> None:
    """As for DATA's final dot: the publish is shielded; the client saw no 250, so none or one whole copy each."""
    text = b"Subject: gone\r\n\r\nbody\r\n"
    for _ in range(5):
        raw = RawSMTP(ingress.port("smtp"))
        raw.reply()
        raw.command("EHLO client.example.org")
        raw.send(ENVELOPE + b"BDAT %d LAST\r\n" % len(text) + text)
        raw.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST at once
        raw.close()
    registry, handler = ingress.app.server.registry, ingress.app.handler
    wait_until_sync(lambda: not registry.sessions and not handler.inflight, 10, what="sessions and publishes done")
    messages = read_queue(namespace, count=5, timeout=1)
    assert len(messages) <= 5
    assert all(message.body.endswith(b"\r\n" + text) for message in messages)


def test_broker_down_at_bdat_last_is_451_never_250(
    make_ingress: Callable[..., RunningIngress], accounts: None, namespace: str
) -> None:
    with broker_proxy(enabled=False) as proxy:
        ingress = make_ingress(wait_ready=False, amqp_url=proxy.amqp_url)
        with RawSMTP(ingress.port("smtp")) as raw:
            raw.reply()
            raw.command("EHLO client.example.org")
            raw.send(ENVELOPE + b"BDAT 4 LAST\r\nhi\r\n")
            assert replies_of(raw, 3)[-1] == str(replies.TEMPORARY_FAILURE)
        proxy.enable()
        wait_until_sync(ingress.ready, 20, what="broker reconnected")
        with RawSMTP(ingress.port("smtp")) as raw:
            raw.reply()
            raw.command("EHLO client.example.org")
            raw.send(ENVELOPE + b"BDAT 4 LAST\r\nhi\r\n")
            assert replies_of(raw, 3)[-1] == "queued"
    [message] = read_queue(namespace)
    assert message.body.endswith(b"\r\nhi\r\n")
