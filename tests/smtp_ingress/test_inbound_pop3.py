"""The whole path with the checks on: a DKIM-signed message from an untrusted client through the four real services,
read back over POP3 with our Authentication-Results: on top; a DMARC reject never reaches the mailbox."""

from __future__ import annotations

import asyncio
import poplib
import smtplib
from collections.abc import Callable

from services.store import Store
from shared.netaddr import parse_host_port
from tests.delivery.dnsserver import DNSServer
from tests.helpers import ServiceProcess, wait_until
from tests.smtp_ingress.inbound_dns import SigningKey

PASSWORD = "correct horse battery staple"
ALICE = "alice@example.test"


async def test_signed_message_reaches_the_mailbox_with_its_results_and_a_reject_does_not(
    store: Store,
    base_env: dict[str, str],
    start_service: Callable[..., ServiceProcess],
    inbound_dns: DNSServer,
    signing_key: SigningKey,
) -> None:
    await store.accounts.add_domain("example.test")
    await store.accounts.add_user(ALICE, PASSWORD)
    checks = {"POSTROOM_TRUSTED_NETWORKS": "", "POSTROOM_DNS_NAMESERVERS": inbound_dns.nameserver}
    start_service("store")
    start_service("smtp_ingress", **checks)
    start_service("delivery")
    start_service("pop3")
    smtp_port = parse_host_port(base_env["POSTROOM_SMTP_LISTEN"]).port
    signed = signing_key.sign(
        f"From: Someone <someone@signed.test>\r\nTo: {ALICE}\r\nSubject: signed\r\n\r\nHello Alice.\r\n".encode()
    )
    spoofed = f"From: boss@reject.test\r\nTo: {ALICE}\r\nSubject: urgent\r\n\r\nPay this.\r\n".encode()

    def send(sender: str, data: bytes) -> tuple[int, bytes]:
        with smtplib.SMTP("127.0.0.1", smtp_port, timeout=30) as smtp:
            smtp.ehlo("client.pass.test")
            smtp.mail(sender)
            smtp.rcpt(ALICE)
            return smtp.data(data)

    assert (await asyncio.to_thread(send, "boss@reject.test", spoofed))[0] == 550
    code, reply = await asyncio.to_thread(send, "someone@signed.test", signed)
    assert code == 250, reply

    async def stored() -> bool:
        return len(await store.mailboxes.snapshot(ALICE)) == 1

    await wait_until(stored, what="message stored in alice's mailbox")

    def fetch() -> list[bytes]:
        pop = poplib.POP3("127.0.0.1", parse_host_port(base_env["POSTROOM_POP3_LISTEN"]).port, timeout=30)
        pop.user(ALICE)
        pop.pass_(PASSWORD)
        assert pop.stat()[0] == 1
        _, lines, _ = pop.retr(1)
        pop.quit()
        return lines

    lines = await asyncio.to_thread(fetch)
    assert lines[0] == b"Return-Path: <someone@signed.test>"  # the delivery's, on top of ours
    assert lines[1] == b"Authentication-Results: mx.postroom.test;"
    assert lines[2].startswith(b"\tspf=fail smtp.mailfrom=signed.test")
    results = b" ".join(line.strip() for line in lines[1 : lines.index(b"")])
    assert b"dkim=pass header.d=signed.test header.s=sel1" in results
    assert b"dmarc=pass (p=reject dis=none) header.from=signed.test" in results
    assert b"\r\n".join(lines).endswith(signed.rstrip(b"\r\n"))
