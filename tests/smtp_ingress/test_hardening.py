"""Hostile input: SMTP smuggling, control characters, over-long input, caps, timeouts, error limits, exceptions."""

from __future__ import annotations

import time
from collections.abc import Callable

from services.smtp_ingress import replies
from shared.envelope import Envelope
from tests.helpers import free_port, wait_until_sync
from tests.smtp_ingress.conftest import ALICE, RunningIngress, queue_depth, read_queue
from tests.smtp_ingress.rawsmtp import RawSMTP

SMUGGLED = b"MAIL FROM:<evil@remote.example>\r\nRCPT TO:<bob@local.test>\r\nDATA\r\nSubject: smuggled\r\n\r\nevil\r\n"


def open_transaction(raw: RawSMTP) -> None:
    raw.reply()
    raw.command("EHLO client.example.org")
    assert raw.command("MAIL FROM:<sender@remote.example>") == str(replies.SENDER_OK)
    assert raw.command("RCPT TO:<alice@local.test>") == str(replies.RECIPIENT_OK)
    assert raw.command("DATA") == str(replies.START_DATA)


FAKE_ENDS = [b"\n.\n", b"\n.\r\n", b"\r.\r\n", b"\r\n.\r"]


def test_bare_cr_or_lf_never_ends_data(ingress: RunningIngress, namespace: str) -> None:
    for fake_end in FAKE_ENDS:
        check_fake_end(ingress, namespace, fake_end)


def check_fake_end(ingress: RunningIngress, namespace: str, fake_end: bytes) -> None:
    with RawSMTP(ingress.port("smtp")) as raw:
        open_transaction(raw)
        raw.send(b"Subject: first\r\n\r\nfirst" + fake_end + SMUGGLED + b".\r\n")
        first = raw.reply()
        assert first.startswith("250 2.0.0 Ok: queued as "), first
        assert raw.command("QUIT") == str(replies.BYE)
        assert raw.rest() == b""
    [message] = read_queue(namespace)
    envelope = Envelope.from_headers(message.headers)
    assert envelope.mail_from == "sender@remote.example" and envelope.recipients == (ALICE,)
    assert b"evil@remote.example" in message.body  # the smuggled commands are plain content
    assert b"\n" not in message.body.replace(b"\r\n", b"") and b"\r" not in message.body.replace(b"\r\n", b"")
    assert queue_depth(namespace) == 0


def test_dot_stuffing_is_removed(ingress: RunningIngress, namespace: str) -> None:
    with RawSMTP(ingress.port("smtp")) as raw:
        open_transaction(raw)
        raw.send(b"Subject: dots\r\n\r\n..leading dot\r\n.\r\n")
        assert raw.reply().startswith("250 ")
    [message] = read_queue(namespace)
    assert message.body.endswith(b"\r\n\r\n.leading dot\r\n")


BAD_COMMANDS = [
    (b"MAIL FROM:<a\x00b@remote.example>", replies.CONTROL_CHARACTERS),
    (b"MAIL FROM:<ab@remote.example>\x01", replies.CONTROL_CHARACTERS),
    (b"NOOP \x7f", replies.CONTROL_CHARACTERS),
    (b"NO\x00OP", replies.CONTROL_CHARACTERS),
    (b"MAIL FROM:<sender@remote.example>\rRCPT TO:<alice@local.test>", replies.CONTROL_CHARACTERS),
    (b"MAIL FROM:<" + b"a" * 65 + b"@remote.example>", replies.ADDRESS_TOO_LONG),
    (b"MAIL FROM:<a@" + (b"b" * 60 + b".") * 5 + b"example>", replies.ADDRESS_TOO_LONG),
    (b"MAIL FROM:<" + b"a" * 64 + b"@" + (b"b" * 60 + b".") * 3 + b"example>", replies.ADDRESS_TOO_LONG),
    (b"MAIL FROM:<" + b"a" * 2000 + b"@remote.example>", replies.LINE_TOO_LONG),
    (b"MAIL FROM:<sender@remote.example> BODY=BINARYMIME", replies.PARAM_SYNTAX),
    (b"MAIL FROM:<sender@remote.example> FOO=BAR", replies.PARAM_NOT_IMPLEMENTED),
    (b"MAIL FROM:<sender@bad_domain..example>", replies.BAD_SENDER_SYNTAX),
    (b"XYZZY", replies.UNRECOGNISED),
    (b"RCPT TO:<alice@local.test>", replies.NEED_MAIL),
    (b"DATA", replies.NEED_RCPT),
    (b"VRFY alice@local.test", replies.VRFY_CANNOT),
    (b"EXPN staff", replies.EXPN_NOT_IMPLEMENTED),
]


def test_bad_commands_get_protocol_errors(ingress: RunningIngress) -> None:
    results = {}
    for command, _ in BAD_COMMANDS:
        with RawSMTP(ingress.port("smtp")) as raw:
            raw.reply()
            raw.command("EHLO client.example.org")
            raw.send(command + b"\r\n")
            results[command] = raw.reply()
            assert raw.command("NOOP") == str(replies.OK), command  # the session survives
    assert results == {command: str(reply) for command, reply in BAD_COMMANDS}


def test_truncated_paths_are_syntax_errors(ingress: RunningIngress) -> None:
    """The email parser raises IndexError on some malformed paths: bad syntax, not a 451 and a logged traceback."""
    with RawSMTP(ingress.port("smtp")) as raw:
        raw.reply()
        raw.command("EHLO client.example.org")
        for path in ("<", "<a@", "<@x:", "a@", "__\u2003@[%<:.?."):  # the last: AttributeError
            assert raw.command(f"MAIL FROM:{path}") == str(replies.BAD_SENDER_SYNTAX), path
        assert raw.command("MAIL FROM:<sender@remote.example>") == str(replies.SENDER_OK)
        for path in ("<", "<a@", "<@x:", "a@"):
            assert raw.command(f"RCPT TO:{path}") == str(replies.BAD_RECIPIENT_SYNTAX), path


def test_control_characters_in_ehlo_are_refused(ingress: RunningIngress) -> None:
    with RawSMTP(ingress.port("smtp")) as raw:
        raw.reply()
        raw.send(b"EHLO bad\x00name\r\n")
        assert raw.reply() == str(replies.CONTROL_CHARACTERS)
        assert raw.command("EHLO good.example").startswith("250-mx.postroom.test")


def test_long_data_line_is_refused_after_the_data(ingress: RunningIngress, namespace: str) -> None:
    with RawSMTP(ingress.port("smtp")) as raw:
        open_transaction(raw)
        raw.send(b"Subject: long\r\n\r\n" + b"x" * 100_000 + b"\r\n.\r\n")
        assert raw.reply() == str(replies.DATA_LINE_TOO_LONG)
        assert raw.command("NOOP") == str(replies.OK)
    assert queue_depth(namespace) == 0


def test_unchecked_helo_text_never_reaches_received(ingress: RunningIngress, namespace: str) -> None:
    with RawSMTP(ingress.port("smtp")) as raw:
        raw.reply()
        raw.command("EHLO evil)(by.example; Received: fake")
        assert raw.command("MAIL FROM:<sender@remote.example>") == str(replies.SENDER_OK)
        assert raw.command("RCPT TO:<alice@local.test>") == str(replies.RECIPIENT_OK)
        assert raw.command("DATA") == str(replies.START_DATA)
        raw.send(b"Subject: x\r\n\r\nbody\r\n.\r\n")
        assert raw.reply().startswith("250 ")
    [message] = read_queue(namespace)
    assert message.body.startswith(b"Received: from [127.0.0.1] ([127.0.0.1])\r\n")
    assert b"evil" not in message.body


def test_too_many_errors_closes_with_421(make_ingress: Callable[..., RunningIngress], accounts: None) -> None:
    ingress = make_ingress(smtp_max_errors=3)
    with RawSMTP(ingress.port("smtp")) as raw:
        raw.reply()
        # Pipelined: the commands after the 421 must not be executed.
        raw.send(b"FOO\r\nBAR\r\nBAZ\r\nEHLO x.example\r\nMAIL FROM:<a@remote.example>\r\n")
        assert [raw.reply() for _ in range(3)] == [str(replies.UNRECOGNISED)] * 2 + [str(replies.UNRECOGNISED)]
        assert raw.reply() == str(replies.TOO_MANY_ERRORS)
        assert raw.rest() == b""


def test_unknown_verbs_count_against_the_error_limit_alone(
    make_ingress: Callable[..., RunningIngress], accounts: None
) -> None:
    """POSTROOM_SMTP_MAX_ERRORS is the one limit: aiosmtpd's own (5 unknown verbs, then 502 and close) is gone."""
    ingress = make_ingress(smtp_max_errors=8)
    with RawSMTP(ingress.port("smtp")) as raw:
        raw.reply()
        raw.send(b"".join(b"BOGUS%d\r\n" % n for n in range(7)) + b"NOOP\r\nBOGUS7\r\nNOOP\r\n")
        assert [raw.reply() for _ in range(8)] == [str(replies.UNRECOGNISED)] * 7 + [str(replies.OK)]
        assert raw.reply() == str(replies.UNRECOGNISED)  # the 8th error
        assert raw.reply() == str(replies.TOO_MANY_ERRORS)
        assert raw.rest() == b""


def test_per_ip_connection_cap(make_ingress: Callable[..., RunningIngress], accounts: None) -> None:
    ingress = make_ingress(trusted_networks="", smtp_max_connections_per_ip=2)
    first, second = RawSMTP(ingress.port("smtp")), RawSMTP(ingress.port("submission"))
    try:
        assert first.reply().startswith("220 ") and second.reply().startswith("220 ")
        with RawSMTP(ingress.port("smtp")) as third:
            assert third.reply() == str(replies.TOO_MANY_CONNECTIONS_FROM_IP)
            assert third.rest() == b""
        first.close()
        wait_until_sync(lambda: ingress.app.server.registry.limiter.open == 1, 10, what="release")
        with RawSMTP(ingress.port("smtp")) as fourth:
            assert fourth.reply().startswith("220 ")
    finally:
        first.close()
        second.close()


def test_global_connection_cap(make_ingress: Callable[..., RunningIngress], accounts: None) -> None:
    ingress = make_ingress(smtp_max_connections=1)
    with RawSMTP(ingress.port("smtp")) as first:
        assert first.reply().startswith("220 ")
        with RawSMTP(ingress.port("smtp")) as second:
            assert second.reply() == str(replies.TOO_MANY_CONNECTIONS)


def test_idle_session_gets_421_timeout(make_ingress: Callable[..., RunningIngress], accounts: None) -> None:
    ingress = make_ingress(smtp_command_timeout=0.3)
    with RawSMTP(ingress.port("smtp")) as raw:
        assert raw.reply().startswith("220 ")
        assert raw.reply() == str(replies.TIMEOUT)
        assert raw.rest() == b""


def test_whole_session_timeout(make_ingress: Callable[..., RunningIngress], accounts: None) -> None:
    ingress = make_ingress(smtp_session_timeout=0.5)
    with RawSMTP(ingress.port("smtp")) as raw:
        assert raw.reply().startswith("220 ")
        deadline = time.monotonic() + 20
        reply = str(replies.OK)
        while reply == str(replies.OK) and time.monotonic() < deadline:  # a busy session is cut all the same
            reply = raw.command("NOOP")
        assert reply == str(replies.SESSION_TOO_LONG)


def test_internal_error_is_generic_451(make_ingress: Callable[..., RunningIngress]) -> None:
    """Redis unreachable: the recipient lookup raises; the client sees 451 4.3.0 (a lookup failure, as Postfix says
    it), never the exception."""
    ingress = make_ingress(wait_ready=False, redis_url=f"redis://127.0.0.1:{free_port()}/0")
    with RawSMTP(ingress.port("smtp")) as raw:
        raw.reply()
        raw.command("EHLO client.example.org")
        assert raw.command("MAIL FROM:<sender@remote.example>") == str(replies.SENDER_OK)
        assert raw.command("RCPT TO:<alice@local.test>") == str(replies.LOOKUP_FAILURE)
        assert raw.command("NOOP") == str(replies.OK)
