"""`RCPT TO:<Postmaster>` end to end: smtplib → ingress → RabbitMQ → delivery → the mailbox postmaster@ is an alias
of (RFC 5321 §4.1.1.3 and §4.5.1), with real service processes."""

from __future__ import annotations

import asyncio
import smtplib
from collections.abc import Callable

from services.store import Store
from shared.netaddr import parse_host_port
from tests.harness import ServiceProcess
from tests.helpers import wait_until

PASSWORD = "correct horse battery staple"


async def test_mail_to_postmaster_without_a_domain_reaches_the_postmasters_mailbox(
    store: Store, base_env: dict[str, str], start_service: Callable[..., ServiceProcess]
) -> None:
    await store.accounts.add_domain("example.test")
    await store.accounts.add_user("root@example.test", PASSWORD)
    await store.accounts.add_alias("postmaster@example.test", ["root@example.test"])
    # The host is mx.postroom.test: the primary domain is named by the setting.
    for name in ("smtp_ingress", "delivery"):
        start_service(name, POSTROOM_PRIMARY_DOMAIN="example.test")

    def send(spelling: str) -> tuple[int, bytes]:
        port = parse_host_port(base_env["POSTROOM_SMTP_LISTEN"]).port
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
            smtp.ehlo("client.remote.test")
            smtp.mail("someone@remote.test")
            code, reply = smtp.rcpt(spelling)
            assert code == 250, reply
            return smtp.data(f"From: someone@remote.test\r\nSubject: to {spelling}\r\n\r\nHello.\r\n".encode())

    for spelling in ("Postmaster", "POSTMASTER"):
        code, reply = await asyncio.to_thread(send, spelling)
        assert code == 250, reply

    async def both_stored() -> bool:
        return len(await store.mailboxes.snapshot("root@example.test")) == 2

    await wait_until(both_stored, timeout=60, what="both messages in root's mailbox")
    uids = [info.uid for info in await store.mailboxes.snapshot("root@example.test")]
    bodies = [body or b"" for body in await store.mailboxes.read_many("root@example.test", uids)]
    assert sorted(b"Subject: to POSTMASTER" in body for body in bodies) == [False, True]
