"""DSN parameters at the ingress (RFC 3461): offered, checked, kept as written, and queued with the message."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.smtp_ingress import dsn, replies
from shared.dsn import DSNError, RecipientRequest, parse_notify, xtext_decode, xtext_encode
from shared.envelope import Envelope
from tests.smtp_ingress.conftest import ALICE, BOB, RunningIngress, read_queue
from tests.smtp_ingress.rawsmtp import RawSMTP


def test_ehlo_offers_dsn(ingress: RunningIngress) -> None:
    with ingress.smtp() as client:
        client.ehlo("client.example.org")
        assert client.has_extn("dsn")


def test_parameters_are_queued_with_the_message_as_written(ingress: RunningIngress, namespace: str) -> None:
    with RawSMTP(ingress.port("smtp")) as raw:
        raw.reply()
        raw.command("EHLO client.example.org")
        assert raw.command("MAIL FROM:<sender@remote.example> ret=hdrs SIZE=100 ENVID=Abc+2Bdef") == str(
            replies.SENDER_OK
        )
        assert raw.command(f"RCPT TO:<{ALICE}> NOTIFY=success,Failure ORCPT=rfc822;Alice+40Local.test") == str(
            replies.RECIPIENT_OK
        )
        assert raw.command(f"RCPT TO:<{BOB}>") == str(replies.RECIPIENT_OK)
        assert raw.command("DATA") == str(replies.START_DATA)
        assert raw.command("Subject: dsn\r\n\r\nbody\r\n.").startswith("250 2.0.0 Ok: queued as ")
    [message] = read_queue(namespace)
    envelope = Envelope.from_headers(message.headers)
    assert (envelope.dsn_ret, envelope.dsn_envid) == ("HDRS", "Abc+def")
    assert envelope.dsn_recipients == ((ALICE, "SUCCESS,FAILURE", "rfc822;Alice@Local.test"),)
    assert envelope.dsn_request(BOB) == RecipientRequest()
    assert "SIZE=100" in envelope.esmtp and not any("RET" in p or "ENVID" in p for p in envelope.esmtp)


def test_without_parameters_the_queued_headers_are_as_before(ingress: RunningIngress, namespace: str) -> None:
    with ingress.smtp() as client:
        client.sendmail("sender@remote.example", [ALICE], b"Subject: plain\r\n\r\nok\r\n")
    [message] = read_queue(namespace)
    assert not any("dsn" in key for key in message.headers)


@pytest.mark.parametrize(
    "command",
    [
        "MAIL FROM:<s@remote.example> RET=BODY",
        "MAIL FROM:<s@remote.example> RET=FULL RET=HDRS",
        "MAIL FROM:<s@remote.example> ENVID=a=b",
        "MAIL FROM:<s@remote.example> ENVID=a+2g",
        "MAIL FROM:<s@remote.example> ENVID=" + "x" * 101,
        "MAIL FROM:<s@remote.example> RET",
    ],
)
def test_bad_mail_parameters_are_501(ingress: RunningIngress, command: str) -> None:
    with RawSMTP(ingress.port("smtp")) as raw:
        raw.reply()
        raw.command("EHLO client.example.org")
        assert raw.command(command) == str(replies.PARAM_SYNTAX)
        assert raw.command("MAIL FROM:<s@remote.example>") == str(replies.SENDER_OK)  # no transaction began


@pytest.mark.parametrize(
    "parameters",
    ["NOTIFY=NEVER,SUCCESS", "NOTIFY=SOMETIMES", "NOTIFY=DELAY,DELAY", "NOTIFY=", "ORCPT=alice@local.test", "ORCPT=;x"],
)
def test_bad_rcpt_parameters_are_501(ingress: RunningIngress, parameters: str) -> None:
    with RawSMTP(ingress.port("smtp")) as raw:
        raw.reply()
        raw.command("EHLO client.example.org")
        raw.command("MAIL FROM:<s@remote.example>")
        assert raw.command(f"RCPT TO:<{ALICE}> {parameters}").startswith("501 5.5.4 Syntax")


def test_dsn_parameters_need_ehlo(ingress: RunningIngress) -> None:
    with RawSMTP(ingress.port("smtp")) as raw:
        raw.reply()
        raw.command("HELO client.example.org")
        assert raw.command("MAIL FROM:<s@remote.example> RET=FULL") == str(replies.MAIL_SYNTAX)


def test_take_leaves_the_path_and_other_parameters() -> None:
    names = dsn.MAIL_PARAMETERS
    assert dsn.take("FROM:<a@b.example> RET=FULL SIZE=10 ENVID=x", names) == (
        "FROM:<a@b.example> SIZE=10",
        {"RET": "FULL", "ENVID": "x"},
    )
    assert dsn.take("FROM:<a@b.example>", names) == ("FROM:<a@b.example>", {})
    assert dsn.take('FROM:<"RET=FULL"@b.example>', names) == ('FROM:<"RET=FULL"@b.example>', {})
    with pytest.raises(DSNError):
        dsn.take("FROM:<a@b.example> ENVID=1 envid=2", names)


@given(st.text(st.characters(exclude_categories=["Cs"]), max_size=60))
def test_xtext_round_trips(text: str) -> None:
    encoded = xtext_encode(text)
    assert encoded.isascii() and " " not in encoded and "=" not in encoded
    assert xtext_decode(encoded) == text


def test_notify_forms() -> None:
    assert parse_notify("never") == "NEVER"
    assert parse_notify("delay,success") == "DELAY,SUCCESS"
    assert RecipientRequest("NEVER").wants("FAILURE") is False
    assert RecipientRequest("").wants("DELAY") and not RecipientRequest("").wants("SUCCESS")
