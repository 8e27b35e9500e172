"""Submitting ledger messages to the ingress over SMTP, and downloading and deleting them over POP3."""

from __future__ import annotations

import asyncio
import contextlib
import poplib

import aiosmtplib

from tests.faults.ledger import Ledger, Sent


async def submit(sent: Sent, port: int, host: str = "127.0.0.1", timeout: float = 30) -> Sent:
    """One SMTP transaction for `sent`; records the RCPT answers and the reply to the final dot (None if none)."""
    smtp = aiosmtplib.SMTP(
        hostname=host, port=port, timeout=timeout, start_tls=False, use_tls=False, local_hostname="client.ledger.test"
    )
    try:
        await smtp.connect()
        await smtp.ehlo()
        await smtp.mail(sent.sender)
        accepted = []
        for recipient in sent.recipients:
            with contextlib.suppress(aiosmtplib.SMTPRecipientRefused):
                await smtp.rcpt(recipient)
                accepted.append(recipient)
        sent.accepted_rcpts = tuple(accepted)
        if accepted:
            response = await smtp.data(sent.data)
            sent.code, sent.reply = response.code, response.message
            sent.queue_id = response.message.split()[-1] if response.code == 250 else ""
    except aiosmtplib.SMTPResponseException as exc:
        sent.code, sent.reply = exc.code, exc.message
    except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
        sent.code, sent.reply = None, f"{type(exc).__name__}: {exc}"
    finally:
        with contextlib.suppress(Exception):
            await smtp.quit(timeout=5)
        smtp.close()
    return sent


async def submit_all(messages: list[Sent], port: int, concurrency: int = 4) -> list[Sent]:
    """Submit every message, `concurrency` sessions at a time."""
    slots = asyncio.Semaphore(concurrency)

    async def one(sent: Sent) -> Sent:
        async with slots:
            return await submit(sent, port)

    return list(await asyncio.gather(*(one(sent) for sent in messages)))


def download_and_delete(ledger: Ledger, port: int, address: str, password: str, timeout: float = 30) -> int:
    """RETR every message of a maildrop into the ledger, DELE them, QUIT; returns how many were deleted (0 when the
    session failed before its QUIT was answered: then nothing was deleted, RFC 1939 §6)."""
    uids: list[str] = []
    try:
        pop = poplib.POP3("127.0.0.1", port, timeout=timeout)
    except OSError:
        return 0
    try:
        pop.user(address)
        pop.pass_(password)
        for line in pop.uidl()[1]:
            number, uid = line.decode().split()
            _, lines, _ = pop.retr(int(number))
            ledger.scan_message(b"\r\n".join(lines) + b"\r\n", address, uid)
            pop.dele(int(number))
            uids.append(uid)
        pop.quit()
    except (poplib.error_proto, OSError):
        with contextlib.suppress(Exception):
            pop.close()
        return 0
    ledger.deleted(address, uids)
    return len(uids)
