"""Replies are values with their wire form; every one on the wire carries an enhanced status code (RFC 2034),
except where the RFC exempts it."""

from __future__ import annotations

import dataclasses
import re

import pytest

from services.smtp_ingress import replies
from services.smtp_ingress.replies import Reply
from shared.envelope import Envelope
from tests.smtp_ingress.conftest import ALICE, RunningIngress, read_queue, send
from tests.smtp_ingress.rawsmtp import RawSMTP

ENHANCED = re.compile(r"^[245]\d\d [245]\.\d{1,3}\.\d{1,3} \S")
CONSTANTS = {name: value for name, value in vars(replies).items() if isinstance(value, Reply)}


def test_a_reply_is_a_frozen_value_with_its_wire_form() -> None:
    assert Reply(221, "2.0.0", "Bye", close=True) == replies.BYE
    assert replies.BYE.encode() == b"221 2.0.0 Bye\r\n"
    assert str(replies.BYE) == "221 2.0.0 Bye"
    assert replies.START_DATA.encode() == b"354 End data with <CR><LF>.<CR><LF>\r\n"  # no enhanced code
    assert replies.CHALLENGE_EMPTY.encode() == b"334 \r\n"  # RFC 4954 §4: the space stays
    assert replies.CHALLENGE_USERNAME.encode() == b"334 VXNlcm5hbWU6\r\n"
    assert replies.queued("01ABC").encode() == b"250 2.0.0 Ok: queued as 01ABC\r\n"
    with pytest.raises(dataclasses.FrozenInstanceError):
        replies.OK.code = 500  # type: ignore[misc]
    assert not hasattr(replies.OK, "__dict__")  # slots


def test_a_multiline_reply_marks_every_line_but_the_last() -> None:
    reply = replies.ehlo("mx.example", ["SIZE 10", "PIPELINING"])
    assert reply.encode() == b"250-mx.example\r\n250-SIZE 10\r\n250 PIPELINING\r\n"
    assert str(reply) == "250-mx.example\n250-SIZE 10\n250 PIPELINING"  # as RawSMTP.reply() joins lines
    assert Reply(550, "5.7.1", "a\nb").encode() == b"550-5.7.1 a\r\n550 5.7.1 b\r\n"  # RFC 2034 §3: every line


def test_closing_replies() -> None:
    """Every 421 closes the session (RFC 5321 §3.8), and so does the 221 to QUIT; nothing else does."""
    closing = {name for name, reply in CONSTANTS.items() if reply.close}
    assert closing == {name for name, reply in CONSTANTS.items() if reply.code in (221, 421)}
    assert "BYE" in closing and "TIMEOUT" in closing


def test_constants_carry_enhanced_codes_of_their_class() -> None:
    # RFC 2034 §3: not on the greeting, HELO/EHLO replies or continuations.
    exempt = {"HELO_SYNTAX", "EHLO_SYNTAX", "HELO_BAD_NAME", "START_DATA"} | {n for n in CONSTANTS if "CHALLENGE" in n}
    for name, reply in CONSTANTS.items():
        if name in exempt:
            assert reply.enhanced == "", name
        else:
            assert ENHANCED.match(str(reply)) and reply.enhanced[0] == str(reply.code)[0], name


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
    "BDAT x LAST",
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
    assert seen["QUIT"] == str(replies.BYE)


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
