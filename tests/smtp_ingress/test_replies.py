"""Every reply on the wire carries an enhanced status code (RFC 2034), except where the RFC exempts it."""

from __future__ import annotations

import re

from services.smtp_ingress import replies
from shared.envelope import Envelope
from tests.smtp_ingress.conftest import ALICE, RunningIngress, read_queue, send
from tests.smtp_ingress.rawsmtp import RawSMTP

ENHANCED = re.compile(r"^[245]\d\d [245]\.\d{1,3}\.\d{1,3} \S")

COMMANDS = [
    "NOOP",
    "HELP",
    "HELP MAIL",
    "RSET",
    "RSET now",
    "VRFY",
    "VRFY alice@local.test",
    "VRFY <<<",
    "EXPN list",
    "AUTH PLAIN",
    "MAIL FROM:<a@remote.example>",
    "EHLO client.example.org",
    "MAIL",
    "MAIL TO:<a@remote.example>",
    "MAIL FROM:<a@remote.example> BODY=8BITMIME SMTPUTF8 SIZE=100",
    "MAIL FROM:<b@remote.example>",
    "RCPT",
    "RCPT TO:<alice@local.test> NOTIFY=NEVER",
    "RCPT TO:<alice@local.test>",
    "DATA now",
    "STARTTLS now",
    "AUTH",
    "AUTH PLAIN a b c",
    "QUIT now",
    "BDAT 10 LAST",
    "",
    "QUIT",
]


def test_every_reply_has_an_enhanced_code(ingress: RunningIngress) -> None:
    with RawSMTP(ingress.port("smtp")) as raw:
        assert raw.reply().startswith("220 mx.postroom.test ")  # the greeting is exempt
        seen = {}
        for command in COMMANDS:
            reply = raw.command(command)
            if command.startswith("EHLO"):
                assert reply.startswith("250-mx.postroom.test\n")  # EHLO replies are exempt
                continue
            seen[command] = reply
        assert raw.rest() == b""
    assert {c: r for c, r in seen.items() if not ENHANCED.match(r)} == {}
    assert "(" not in "".join(seen.values()), seen  # no exception text from aiosmtpd
    assert seen["QUIT"] == replies.BYE


def test_helo_client_and_large_message(ingress: RunningIngress, namespace: str) -> None:
    body = b"Subject: big\r\n\r\n" + b"".join(b"%07d " % i + b"y" * 70 + b"\r\n" for i in range(40_000))  # ~3 MB
    with ingress.smtp() as client:
        code, reply = client.helo("old.example.org")
        assert (code, reply) == (250, b"mx.postroom.test")
        code, _ = send(client, "sender@remote.example", [ALICE], body)
    assert code == 250
    [message] = read_queue(namespace)
    assert message.body.endswith(body)
    assert b"with SMTP id " + Envelope.from_headers(message.headers).queue_id.encode() in message.body[:400]
