"""The hostile MX itself, driven by aiosmtplib: each behaviour reaches the client as scripted, and it records."""

from __future__ import annotations

import random
import ssl
from collections.abc import AsyncIterator

import aiosmtplib
import pytest

from tests.faults.hostile_mx import HostileMX, Script, latin1, multiline

MESSAGE = b"Subject: hi\r\n\r\n.leading dot\r\nbody\r\n"


@pytest.fixture
async def address() -> str:
    return f"127.27.{random.randrange(1, 250)}.{random.randrange(1, 250)}"


@pytest.fixture
async def mx(address: str) -> AsyncIterator[list[HostileMX]]:
    started: list[HostileMX] = []
    yield started
    for server in started:
        server.stop()


def start(mx: list[HostileMX], address: str, *scripts: Script) -> HostileMX:
    server = HostileMX(address, list(scripts) or None).start()
    mx.append(server)
    return server


async def client(server: HostileMX, **kwargs: object) -> aiosmtplib.SMTP:
    smtp = aiosmtplib.SMTP(hostname=server.address, port=server.port, start_tls=False, timeout=10, **kwargs)  # type: ignore[arg-type]
    await smtp.connect()
    await smtp.ehlo()
    return smtp


async def test_a_plain_session_is_recorded_unstuffed(mx: list[HostileMX], address: str) -> None:
    server = start(mx, address)
    smtp = await client(server)
    await smtp.sendmail("a@b.test", ["c@d.test", "e@f.test"], MESSAGE)
    await smtp.quit()
    [received] = server.accepted()
    assert (received.mail_from, received.recipients, received.data) == ("a@b.test", ["c@d.test", "e@f.test"], MESSAGE)
    assert server.copies(b".leading dot") == 2


async def test_per_recipient_answers_latin1_and_split_replies(mx: list[HostileMX], address: str) -> None:
    script = Script(rcpt={"bad@d.test": latin1("550 5.1.1 Müller unknown")}, split=3, split_pause=0.001)
    server = start(mx, address, script)
    smtp = await client(server)
    await smtp.mail("a@b.test")
    with pytest.raises(aiosmtplib.SMTPRecipientRefused) as refused:
        await smtp.rcpt("bad@d.test")
    assert refused.value.code == 550 and "\udcfc" in refused.value.message  # Latin-1 ü, undecodable as UTF-8
    await smtp.rcpt("good@d.test")
    await smtp.data(MESSAGE)
    assert [t.recipients for t in server.accepted()] == [["good@d.test"]]


async def test_huge_replies_and_invalid_codes(mx: list[HostileMX], address: str) -> None:
    server = start(mx, address, Script(ehlo=multiline(250, 2000, 4096)), Script(mail=b"999 what\r\n"))
    with pytest.raises(aiosmtplib.SMTPResponseException):
        await client(server)
    smtp = await client(server)
    with pytest.raises(aiosmtplib.SMTPResponseException) as odd:
        await smtp.mail("a@b.test")
    assert odd.value.code == 999


async def test_broken_starttls_and_hang_ups(mx: list[HostileMX], address: str) -> None:
    server = start(mx, address, Script(starttls="broken"), Script(hang_up_at="dot"), Script(hang_up_at="data"))
    smtp = await client(server)
    assert smtp.supports_extension("starttls")
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    with pytest.raises((aiosmtplib.SMTPException, ssl.SSLError, OSError)):
        await smtp.starttls(tls_context=context)
    smtp = await client(server)
    with pytest.raises(aiosmtplib.SMTPServerDisconnected):
        await smtp.sendmail("a@b.test", ["c@d.test"], MESSAGE)
    assert server.transactions[-1].reply is None and not server.accepted()  # read whole, never acknowledged
    smtp = await client(server)
    await smtp.mail("a@b.test")
    await smtp.rcpt("c@d.test")
    with pytest.raises(aiosmtplib.SMTPServerDisconnected):
        await smtp.data(MESSAGE)
    assert server.connections == 3 and len(server.transactions) == 1
