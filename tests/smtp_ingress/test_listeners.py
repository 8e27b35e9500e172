"""The three listeners: EHLO extensions, STARTTLS, AUTH, submission rules, implicit TLS, pipelining."""

from __future__ import annotations

import base64
import smtplib
import socket
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509
from prometheus_client import REGISTRY

from services.smtp_ingress import replies
from shared.envelope import Envelope
from shared.tls import self_signed_pair
from tests.harness import Harness
from tests.helpers import client_tls
from tests.smtp_ingress.conftest import (
    ALICE,
    BOB,
    PASSWORD,
    RunningIngress,
    read_queue,
    send,
)
from tests.smtp_ingress.rawsmtp import RawSMTP


def reply_text(code: int, reply: bytes) -> str:
    return f"{code} {reply.decode()}"


def test_mx_ehlo_advertises_extensions_and_auth_only_after_starttls(ingress: RunningIngress) -> None:
    with ingress.smtp() as client:
        client.ehlo("client.example.org")
        assert client.esmtp_features["size"] == str(ingress.settings.max_message_size)
        for keyword in ("8bitmime", "smtputf8", "pipelining", "enhancedstatuscodes", "starttls"):
            assert keyword in client.esmtp_features, keyword
        assert "auth" not in client.esmtp_features
        assert "help" not in client.esmtp_features
        code, reply = client.docmd("AUTH", "PLAIN " + base64.b64encode(f"\0{ALICE}\0{PASSWORD}".encode()).decode())
        assert reply_text(code, reply) == str(replies.AUTH_NEEDS_TLS)
        client.starttls(context=client_tls())
        client.ehlo("client.example.org")
        assert "starttls" not in client.esmtp_features
        assert sorted(client.esmtp_features["auth"].split()) == ["LOGIN", "PLAIN"]


def test_submission_requires_starttls_then_auth(ingress: RunningIngress) -> None:
    with ingress.smtp("submission") as client:
        client.ehlo("client.example.org")
        assert "auth" not in client.esmtp_features
        code, reply = client.docmd("AUTH", "LOGIN")
        assert reply_text(code, reply) == str(replies.STARTTLS_REQUIRED)
        code, reply = client.mail(ALICE)
        assert reply_text(code, reply) == str(replies.STARTTLS_REQUIRED)
        client.starttls(context=client_tls())
        client.ehlo("client.example.org")
        # MAIL passes (mail to the postmaster needs no AUTH, RFC 5321 §4.5.1); any other recipient needs AUTH.
        assert reply_text(*client.mail(ALICE)) == str(replies.SENDER_OK)
        code, reply = client.rcpt(BOB)
        assert reply_text(code, reply) == str(replies.AUTH_REQUIRED)
        assert reply_text(*client.docmd("DATA")) == str(replies.NEED_RCPT)


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
def test_submission_with_auth_adds_message_id_date_and_auth_facts(
    ingress: RunningIngress, namespace: str, mechanism: str
) -> None:
    with ingress.smtp("submission") as client:
        client.starttls(context=client_tls())
        client.ehlo("laptop.example.org")
        client.user, client.password = ALICE, PASSWORD
        code, reply = client.auth(mechanism, getattr(client, f"auth_{mechanism.lower()}"))
        assert reply_text(code, reply) == str(replies.AUTH_OK)
        code, reply = send(client, ALICE, ["someone@remote.example"], b"Subject: no id\r\n\r\nbody\r\n")
    assert code == 250
    [message] = read_queue(namespace)
    envelope = Envelope.from_headers(message.headers)
    assert envelope.auth_user == ALICE and envelope.recipients == ("someone@remote.example",)
    head = message.body.split(b"\r\n\r\n", 1)[0].decode()
    assert "with ESMTPSA id" in head and "(using TLSv1." in head
    assert ALICE not in head.partition("\r\nMessage-ID:")[0]  # Received: does not name the account by default
    assert f"Message-ID: <{envelope.queue_id}@mx.postroom.test>" in head
    assert "\r\nDate: " in head


def test_submission_keeps_existing_message_id_and_date(ingress: RunningIngress, namespace: str) -> None:
    message = b"Message-ID: <mine@laptop>\r\nDate: Mon, 1 Jan 2024 00:00:00 +0000\r\nSubject: x\r\n\r\nbody\r\n"
    with ingress.smtp("smtps") as client:
        client.login(ALICE, PASSWORD)
        code, _ = send(client, ALICE, [BOB], message)
    assert code == 250
    [queued] = read_queue(namespace)
    head = queued.body.split(b"\r\n\r\n", 1)[0]
    assert head.count(b"Message-ID:") == 1 and head.count(b"Date:") == 1


def test_implicit_tls_listener_offers_auth_not_starttls_and_requires_auth(ingress: RunningIngress) -> None:
    with ingress.smtp("smtps") as client:
        client.ehlo("client.example.org")
        assert "starttls" not in client.esmtp_features
        assert sorted(client.esmtp_features["auth"].split()) == ["LOGIN", "PLAIN"]
        assert reply_text(*client.mail(ALICE)) == str(replies.SENDER_OK)
        code, reply = client.rcpt("someone@remote.example")
        assert reply_text(code, reply) == str(replies.AUTH_REQUIRED)


def test_wrong_password_is_535_and_counted(ingress: RunningIngress) -> None:
    before = REGISTRY.get_sample_value("postroom_smtp_auth_failures_total", {"mechanism": "PLAIN"}) or 0
    with ingress.smtp("smtps") as client:
        client.ehlo("client.example.org")
        client.user, client.password = ALICE, "wrong"
        with pytest.raises(smtplib.SMTPAuthenticationError) as error:
            client.auth("PLAIN", client.auth_plain)
    assert f"{error.value.smtp_code} {error.value.smtp_error.decode()}" == str(replies.AUTH_INVALID)  # type: ignore[union-attr]
    after = REGISTRY.get_sample_value("postroom_smtp_auth_failures_total", {"mechanism": "PLAIN"})
    assert after == before + 1


def test_auth_for_unknown_user_and_malformed_plain(ingress: RunningIngress) -> None:
    with ingress.smtp("smtps") as client:
        client.ehlo("client.example.org")
        bad = base64.b64encode(b"no-nul-separators").decode()
        assert reply_text(*client.docmd("AUTH", f"PLAIN {bad}")) == str(replies.AUTH_BAD_RESPONSE)
        assert reply_text(*client.docmd("AUTH", "PLAIN %%%")) == str(replies.AUTH_BAD_BASE64)
        unknown = base64.b64encode(f"\0nobody@local.test\0{PASSWORD}".encode()).decode()
        assert reply_text(*client.docmd("AUTH", f"PLAIN {unknown}")) == str(replies.AUTH_INVALID)
        assert reply_text(*client.docmd("AUTH", "CRAM-MD5")) == str(replies.AUTH_UNKNOWN_MECHANISM)
        right = base64.b64encode(f"\0{ALICE}\0{PASSWORD}".encode()).decode()
        assert reply_text(*client.docmd("AUTH", f"plain {right}")) == str(replies.AUTH_OK)
        assert reply_text(*client.docmd("AUTH", f"PLAIN {right}")) == str(replies.AUTH_ALREADY)


def test_pipelined_transaction_is_answered_in_order(ingress: RunningIngress, namespace: str) -> None:
    with RawSMTP(ingress.port("smtp")) as raw:
        assert raw.reply().startswith("220 mx.postroom.test ESMTP")
        assert "PIPELINING" in raw.command("EHLO client.example.org")
        raw.send(
            b"MAIL FROM:<sender@remote.example>\r\nRCPT TO:<alice@local.test>\r\n"
            b"RCPT TO:<nobody@local.test>\r\nRCPT TO:<bob@local.test>\r\nDATA\r\n"
        )
        assert [raw.reply() for _ in range(5)] == [
            str(replies.SENDER_OK),
            str(replies.RECIPIENT_OK),
            str(replies.NO_SUCH_USER),
            str(replies.RECIPIENT_OK),
            str(replies.START_DATA),
        ]
        raw.send(b"Subject: piped\r\n\r\nbody\r\n.\r\nNOOP\r\nQUIT\r\n")
        assert raw.reply().startswith("250 2.0.0 Ok: queued as ")
        assert raw.reply() == str(replies.OK)
        assert raw.reply() == str(replies.BYE)
    [message] = read_queue(namespace)
    assert Envelope.from_headers(message.headers).recipients == (ALICE, BOB)


def test_starttls_discards_pipelined_plaintext(ingress: RunningIngress) -> None:
    with RawSMTP(ingress.port("smtp")) as raw:
        raw.reply()
        raw.command("EHLO client.example.org")
        raw.send(b"STARTTLS\r\nMAIL FROM:<evil@remote.example>\r\nRCPT TO:<alice@local.test>\r\n")
        assert raw.reply() == str(replies.READY_FOR_TLS)
        raw.starttls()
        # Had the injected commands survived, their replies would come before this NOOP's.
        assert raw.command("NOOP") == str(replies.OK)
        assert raw.command("EHLO client.example.org").startswith("250-mx.postroom.test")
        assert raw.command("RCPT TO:<alice@local.test>") == str(replies.NEED_MAIL)
        assert raw.command("QUIT") == str(replies.BYE)


def test_configured_certificate_is_served(
    make_ingress: Callable[..., RunningIngress], accounts: None, tmp_path: Path
) -> None:
    cert, key = self_signed_pair("custom.postroom.test", tmp_path)
    ingress = make_ingress(tls_cert=str(cert), tls_key=str(key))
    sock = socket.create_connection(("127.0.0.1", ingress.port("smtps")), timeout=10)
    with client_tls().wrap_socket(sock) as tls:
        served = tls.getpeercert(binary_form=True)
    assert served is not None
    assert x509.load_der_x509_certificate(served) == x509.load_pem_x509_certificate(cert.read_bytes())


def test_bad_configuration_stops_the_process_naming_the_variable(harness: Harness, tmp_path: Path) -> None:
    cert, _ = self_signed_pair("custom.postroom.test", tmp_path)
    for overrides, variable in (
        ({"POSTROOM_SMTP_LISTEN": "not-an-address"}, "POSTROOM_SMTP_LISTEN"),
        ({"POSTROOM_TLS_CERT": str(cert)}, "POSTROOM_TLS_KEY"),
        ({"POSTROOM_SMTP_LISTEN": "192.0.2.1:2525"}, "POSTROOM_SMTP_LISTEN"),  # not an address of this host
    ):
        result = harness.run("smtp_ingress", **overrides)
        assert result.returncode == 2, result.stderr
        assert variable in result.stderr and "Traceback" not in result.stderr


def test_any_spelling_of_the_account_logs_in_as_that_account(ingress: RunningIngress, namespace: str) -> None:
    """The session's identity is the account as the store spells it, so MAIL FROM ownership and the throttle agree
    with the login about who it is."""
    with ingress.smtp("smtps") as client:
        client.login(" ALICE@Local.Test.. ", PASSWORD)
        code, reply = send(client, ALICE, [BOB], b"Subject: x\r\n\r\nbody\r\n")
    assert code == 250, reply
    [message] = read_queue(namespace)
    assert Envelope.from_headers(message.headers).auth_user == ALICE


def test_received_names_the_account_only_when_the_operator_opts_in(
    make_ingress: Callable[..., RunningIngress], accounts: None, namespace: str
) -> None:
    for opted_in in (False, True):
        ingress = make_ingress(smtp_received_auth=opted_in)
        with ingress.smtp("smtps") as client:
            client.login(ALICE, PASSWORD)
            assert send(client, ALICE, [BOB], b"Subject: x\r\n\r\nbody\r\n")[0] == 250
        [message] = read_queue(namespace)
        received = message.body.split(b"\r\nSubject:", 1)[0].split(b"\r\nMessage-ID:", 1)[0].decode()
        assert received.startswith("Received: ") and "with ESMTPSA id" in received
        assert (f"(authenticated sender: {ALICE})" in received) is opted_in
        assert (ALICE in received) is opted_in, received
        assert Envelope.from_headers(message.headers).auth_user == ALICE  # the envelope (and trace) keep it
