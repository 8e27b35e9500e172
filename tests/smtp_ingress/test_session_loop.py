"""The command loop (aiosmtpd's) at its edges, and sessions freed without the cyclic GC."""

from __future__ import annotations

import gc
import logging
import socket
import struct
import weakref
from collections.abc import Iterator

import pytest

from services.smtp_ingress import replies
from services.smtp_ingress.session import IngressSMTP
from tests.helpers import wait_until_sync
from tests.smtp_ingress.conftest import ALICE, RunningIngress
from tests.smtp_ingress.rawsmtp import RawSMTP


def test_commands_pipelined_behind_quit_get_no_reply(ingress: RunningIngress) -> None:
    """The 221 to QUIT closes the session: whatever came behind it in the same read is never answered."""
    with RawSMTP(ingress.port("smtp")) as raw:
        raw.reply()
        raw.send(b"EHLO client.example.org\r\nQUIT\r\nNOOP\r\nRSET\r\n")
        assert raw.reply().startswith("250-mx.postroom.test")
        assert raw.reply() == str(replies.BYE)
        assert raw.rest() == b""


def test_quit_with_an_argument_keeps_the_session(ingress: RunningIngress) -> None:
    with RawSMTP(ingress.port("smtp")) as raw:
        raw.reply()
        assert raw.command("QUIT now") == str(replies.PARAM_SYNTAX)
        assert raw.command("NOOP") == str(replies.OK)
        assert raw.command("QUIT") == str(replies.BYE)
        assert raw.rest() == b""


def test_command_lines_are_logged_only_when_aiosmtpd_logs_them(
    ingress: RunningIngress, caplog: pytest.LogCaptureFixture
) -> None:
    """aiosmtpd's loop logs each command line through `sanitized_log`, which the session makes skip its AUTH mask
    while the logger is off: off, no line; on, the line, credentials masked as aiosmtpd masks them."""
    with caplog.at_level(logging.WARNING, logger="mail.log"), RawSMTP(ingress.port("smtp")) as raw:
        raw.reply()
        assert raw.command("NOOP quiet") == str(replies.OK)
    assert not [record for record in caplog.records if "quiet" in record.getMessage()]
    with caplog.at_level(logging.INFO, logger="mail.log"), RawSMTP(ingress.port("smtp")) as raw:
        raw.reply()
        assert raw.command("NOOP loud") == str(replies.OK)
        raw.command("AUTH PLAIN AHVzZXIAc2VjcmV0")
    lines = [record.getMessage() for record in caplog.records if record.name == "mail.log"]
    assert any(">> b'NOOP loud'" in line for line in lines), lines
    assert any("AUTH PLAIN ********" in line for line in lines), lines
    assert not any("AHVzZXIAc2VjcmV0" in line for line in lines), lines


@pytest.fixture
def no_cyclic_gc() -> Iterator[None]:
    """With the cyclic collector off, only reference counting frees objects: a session in a cycle would stay."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _sessions(ingress: RunningIngress) -> list[weakref.ref[IngressSMTP]]:
    async def refs() -> list[weakref.ref[IngressSMTP]]:
        return [weakref.ref(session) for session in ingress.app.server.registry.sessions]

    return ingress.run(refs())


def _freed(refs: list[weakref.ref[IngressSMTP]]) -> bool:
    return all(ref() is None for ref in refs)


def _transaction(raw: RawSMTP) -> None:
    raw.reply()
    assert raw.command("EHLO client.example.org").startswith("250-")
    assert raw.command("MAIL FROM:<sender@remote.example>") == str(replies.SENDER_OK)
    assert raw.command(f"RCPT TO:<{ALICE}>") == str(replies.RECIPIENT_OK)
    assert raw.command("DATA").startswith("354")


def test_finished_sessions_are_freed_by_reference_counting(ingress: RunningIngress, no_cyclic_gc: None) -> None:
    refs = []
    # A whole message then QUIT.
    with RawSMTP(ingress.port("smtp")) as raw:
        _transaction(raw)
        refs += _sessions(ingress)
        raw.send(b"Subject: t\r\n\r\nbody\r\n.\r\n")
        assert raw.reply().startswith("250 2.0.0 Ok: queued as ")
        assert raw.command("QUIT") == str(replies.BYE)
        assert raw.rest() == b""
    # The client goes away in the middle of a transaction.
    with RawSMTP(ingress.port("smtp")) as raw:
        raw.reply()
        raw.command("EHLO client.example.org")
        raw.command("MAIL FROM:<sender@remote.example>")
        refs += _sessions(ingress)
    # The worst moment: reset right after the final dot, with the publish still running.
    raw = RawSMTP(ingress.port("smtp"))
    _transaction(raw)
    refs += _sessions(ingress)
    raw.send(b"Subject: gone\r\n\r\nbody\r\n.\r\n")
    raw.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    raw.close()
    assert len(refs) == 3
    registry, handler = ingress.app.server.registry, ingress.app.handler
    wait_until_sync(lambda: not registry.sessions and not handler.inflight, 10, what="sessions and publishes done")
    wait_until_sync(lambda: _freed(refs), 10, what="sessions freed without the cyclic collector")
