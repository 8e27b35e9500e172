"""One message all the way: SMTP → RabbitMQ → delivery → Redis mailbox → POP3, with four real service processes."""

from __future__ import annotations

import asyncio
import poplib
import smtplib
from collections.abc import Callable

from services.store import Store
from shared.netaddr import parse_host_port
from tests.harness import ServiceProcess
from tests.helpers import wait_until

PASSWORD = "correct horse battery staple"


def _port(env: dict[str, str], name: str) -> int:
    return parse_host_port(env[name]).port


async def test_message_travels_from_smtp_to_pop3_and_is_deleted_at_quit(
    store: Store, base_env: dict[str, str], start_service: Callable[..., ServiceProcess]
) -> None:
    await store.accounts.add_domain("example.test")
    await store.accounts.add_user("alice@example.test", PASSWORD)
    for name in ("store", "smtp_ingress", "delivery", "pop3"):
        start_service(name)

    message = (
        "From: bob@remote.test\r\nTo: alice@example.test\r\nSubject: end to end\r\n\r\nHello Alice.\r\n.dot line\r\n"
    )

    def send() -> tuple[int, bytes]:
        with smtplib.SMTP("127.0.0.1", _port(base_env, "POSTROOM_SMTP_LISTEN"), timeout=30) as smtp:
            smtp.ehlo("client.remote.test")
            smtp.mail("bob@remote.test")
            smtp.rcpt("alice@example.test")
            return smtp.data(message.encode())

    code, reply = await asyncio.to_thread(send)
    assert code == 250, reply
    queue_id = reply.decode().split()[-1]

    async def stored() -> bool:
        return len(await store.mailboxes.snapshot("alice@example.test")) == 1

    await wait_until(stored, what="message stored in alice's mailbox")

    def fetch_and_delete() -> tuple[bytes, list[bytes]]:
        pop = poplib.POP3("127.0.0.1", _port(base_env, "POSTROOM_POP3_LISTEN"), timeout=30)
        pop.user("alice@example.test")
        pop.pass_(PASSWORD)
        count, _size = pop.stat()
        assert count == 1
        uidl = pop.uidl(1)
        _, lines, _ = pop.retr(1)
        pop.dele(1)
        pop.quit()
        return uidl, lines

    uidl, lines = await asyncio.to_thread(fetch_and_delete)
    assert queue_id.encode() in uidl or queue_id.encode() in b"\n".join(lines)
    body = b"\r\n".join(lines)
    assert b"Subject: end to end" in body
    assert b"Received:" in body
    assert b"\r\n.dot line" in body  # dot-stuffed on the wire, unstuffed by poplib
    assert await store.mailboxes.snapshot("alice@example.test") == []
