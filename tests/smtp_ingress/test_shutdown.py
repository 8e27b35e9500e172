"""Graceful shutdown: 421 to new sessions, open transactions finish, then the process exits 0."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable

from services.smtp_ingress import replies
from tests.harness import ServiceProcess
from tests.helpers import wait_until_sync
from tests.smtp_ingress.conftest import RunningIngress, read_queue
from tests.smtp_ingress.rawsmtp import RawSMTP


def start_transaction(port: int) -> RawSMTP:
    raw = RawSMTP(port)
    raw.reply()
    raw.command("EHLO client.example.org")
    assert raw.command("MAIL FROM:<sender@remote.example>") == str(replies.SENDER_OK)
    assert raw.command("RCPT TO:<alice@local.test>") == str(replies.RECIPIENT_OK)
    return raw


def test_drain_finishes_transactions_and_refuses_new_sessions(ingress: RunningIngress, namespace: str) -> None:
    busy = start_transaction(ingress.port("smtp"))
    idle = RawSMTP(ingress.port("submission"))
    try:
        assert idle.reply().startswith("220 ")
        drained = asyncio.run_coroutine_threadsafe(ingress.app.server.drain(20), ingress.loop)
        assert idle.reply() == str(replies.SHUTTING_DOWN)
        assert idle.rest() == b""
        with RawSMTP(ingress.port("smtp")) as late:
            assert late.reply() == str(replies.SHUTTING_DOWN)
        assert not ingress.ready()

        assert busy.command("DATA") == str(replies.START_DATA)
        busy.send(b"Subject: last one\r\n\r\nbody\r\n.\r\n")
        assert busy.reply().startswith("250 2.0.0 Ok: queued as ")
        assert busy.reply() == str(replies.SHUTTING_DOWN)
        assert busy.rest() == b""
        drained.result(20)
    finally:
        busy.close()
        idle.close()
    assert len(read_queue(namespace)) == 1


def test_sigterm_lets_the_open_transaction_finish_then_exits_0(
    start_service: Callable[..., ServiceProcess], base_env: dict[str, str], accounts: None, namespace: str
) -> None:
    service = start_service("smtp_ingress")
    port = int(base_env["POSTROOM_SMTP_LISTEN"].rsplit(":", 1)[1])
    busy = start_transaction(port)
    try:
        assert service.proc is not None
        service.proc.send_signal(signal.SIGTERM)

        def refused() -> bool:
            with RawSMTP(port) as probe:
                return probe.reply() == str(replies.SHUTTING_DOWN)

        wait_until_sync(refused, 10, what="421 to new sessions")
        assert busy.command("DATA") == str(replies.START_DATA)
        busy.send(b"Subject: last one\r\n\r\nbody\r\n.\r\n")
        assert busy.reply().startswith("250 2.0.0 Ok: queued as ")
        assert busy.reply() == str(replies.SHUTTING_DOWN)
        assert service.proc.wait(20) == 0
    finally:
        busy.close()
    assert len(read_queue(namespace)) == 1
