"""Internationalised mail end to end: a UTF-8 addressed message submitted over 587, read over POP3 after `UTF8`."""

from __future__ import annotations

import asyncio
import poplib
import smtplib
from collections.abc import Callable

from services.store import Store
from shared.netaddr import parse_host_port
from tests.helpers import ServiceProcess, client_tls, wait_until

PASSWORD = "correct horse battery staple"


async def test_utf8_message_from_submission_to_pop3_whatever_form_of_the_domain(
    store: Store, base_env: dict[str, str], start_service: Callable[..., ServiceProcess]
) -> None:
    # Created with the A-label form, addressed with the U-label one, logged into with either.
    await store.accounts.add_domain("xn--bcher-kva.test")
    await store.accounts.add_user("info@xn--bcher-kva.test", PASSWORD)
    await store.accounts.add_user("jörg@bücher.test", PASSWORD)
    for name in ("smtp_ingress", "delivery", "pop3"):
        start_service(name)
    message = "From: info@bücher.test\r\nTo: jörg@bücher.test\r\nSubject: Grüße\r\n\r\nHallo Jörg.\r\n".encode()

    def send() -> tuple[int, bytes]:
        port = parse_host_port(base_env["POSTROOM_SUBMISSION_LISTEN"]).port
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
            smtp.starttls(context=client_tls())
            smtp.login("info@xn--bcher-kva.test", PASSWORD)  # smtplib sends AUTH in ASCII only
            smtp.mail("info@bücher.test", ["SMTPUTF8", "BODY=8BITMIME"])  # owned: the same account
            smtp.rcpt("jörg@xn--bcher-kva.test")
            return smtp.data(message)

    code, reply = await asyncio.to_thread(send)
    assert code == 250, reply

    async def stored() -> bool:
        return len(await store.mailboxes.snapshot("jörg@bücher.test")) == 1

    await wait_until(stored, what="message stored in jörg's mailbox")

    def fetch() -> list[bytes]:
        pop = poplib.POP3("127.0.0.1", parse_host_port(base_env["POSTROOM_POP3_LISTEN"]).port, timeout=30)
        try:
            utf8: bytes = pop._shortcmd("UTF8")  # type: ignore[attr-defined]  # poplib has no UTF8 method
            assert utf8.startswith(b"+OK")  # RFC 6856: UTF-8 user names from here on
            pop.user("jörg@xn--bcher-kva.test")
            pop.pass_(PASSWORD)
            _, lines, _ = pop.retr(1)
            return list(lines)
        finally:
            pop.quit()

    lines = await asyncio.to_thread(fetch)
    assert "Subject: Grüße".encode() in lines
    assert "Hallo Jörg.".encode() in lines
