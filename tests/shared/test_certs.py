"""Listener certificates renew without a restart: a real TLS listener on loopback, its files replaced or SIGHUP sent,
new handshakes get the new certificate while a session already open keeps working; a bad pair is refused."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography import x509

from shared.certs import EXPIRY, RELOADS, CertificateReloader, not_after
from tests.certs import TestCA, server_context
from tests.helpers import wait_until

NAME = "mail.certs.test"


class Listener:
    """An echo server over TLS with `context`, and a client that trusts `ca`."""

    def __init__(self, context: ssl.SSLContext, ca: TestCA) -> None:
        self.context = context
        self.client = ssl.create_default_context(cafile=str(ca.ca_file))
        self.server: asyncio.Server | None = None

    async def start(self) -> None:
        async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while line := await reader.readline():
                writer.write(line)
                await writer.drain()
            writer.close()

        self.server = await asyncio.start_server(echo, "127.0.0.1", 0, ssl=self.context)

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection("127.0.0.1", self.port, ssl=self.client, server_hostname=NAME)

    async def serial(self) -> int:
        """The serial number of the certificate a new handshake gets."""
        _, writer = await self.connect()
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        writer.close()
        return int(x509.load_der_x509_certificate(der).serial_number)


def serial_of(cert: Path) -> int:
    return int(x509.load_pem_x509_certificate(cert.read_bytes()).serial_number)


@pytest.fixture
def ca(tmp_path: Path) -> TestCA:
    return TestCA(tmp_path)


@pytest.fixture
def live(tmp_path: Path, ca: TestCA) -> tuple[Path, Path]:
    """The files a listener is configured with (what cert-manager or certbot replaces)."""
    cert, key = ca.issue(NAME)
    live_cert, live_key = tmp_path / "live.crt", tmp_path / "live.key"
    shutil.copy(cert, live_cert)
    shutil.copy(key, live_key)
    return live_cert, live_key


@pytest.fixture
async def listener(live: tuple[Path, Path], ca: TestCA) -> AsyncIterator[tuple[Listener, CertificateReloader]]:
    cert, key = live
    context = server_context(cert, key)
    reloader = CertificateReloader(context, str(cert), str(key), ["smtps", "pop3s"], interval=0.05)
    server = Listener(context, ca)
    await server.start()
    yield server, reloader
    assert server.server is not None
    server.server.close()


def renew(ca: TestCA, live: tuple[Path, Path], tmp_path: Path) -> Path:
    """A new certificate and key written over the live files, as a renewal does; returns the new certificate."""
    (tmp_path / "next").mkdir(exist_ok=True)
    cert, key = ca.issue(NAME)
    os.replace(shutil.copy(key, tmp_path / "next" / "k"), live[1])
    os.replace(shutil.copy(cert, tmp_path / "next" / "c"), live[0])
    return live[0]


async def test_renewed_files_are_served_to_new_sessions_while_old_ones_go_on(
    listener: tuple[Listener, CertificateReloader], live: tuple[Path, Path], ca: TestCA, tmp_path: Path
) -> None:
    server, reloader = listener
    before = await server.serial()
    reader, writer = await server.connect()  # a session open across the renewal
    stop = asyncio.Event()
    watching = asyncio.create_task(reloader.watch(stop))
    renewed = serial_of(renew(ca, live, tmp_path))

    async def serves_the_new_one() -> bool:
        return await server.serial() == renewed

    await wait_until(serves_the_new_one, timeout=10, what="the renewed certificate served")
    writer.write(b"still here\n")
    await writer.drain()
    assert await reader.readline() == b"still here\n"
    writer.close()
    stop.set()
    await watching
    assert before != renewed
    assert EXPIRY.labels("smtps")._value.get() == not_after(live[0]) == EXPIRY.labels("pop3s")._value.get()


async def test_sighup_reloads(
    listener: tuple[Listener, CertificateReloader], live: tuple[Path, Path], ca: TestCA, tmp_path: Path
) -> None:
    server, reloader = listener
    loop = asyncio.get_running_loop()
    reloader.install(loop)
    try:
        renewed = serial_of(renew(ca, live, tmp_path))
        os.kill(os.getpid(), signal.SIGHUP)

        async def serves_the_new_one() -> bool:
            return await server.serial() == renewed

        await wait_until(serves_the_new_one, timeout=10, what="the certificate reloaded on SIGHUP")
    finally:
        loop.remove_signal_handler(signal.SIGHUP)


async def test_a_mismatched_pair_is_refused_and_the_old_one_stays(
    listener: tuple[Listener, CertificateReloader], live: tuple[Path, Path], ca: TestCA
) -> None:
    server, reloader = listener
    before = await server.serial()
    refused = RELOADS.labels("refused")._value.get()
    other_cert, _ = ca.issue("other.certs.test")
    shutil.copy(other_cert, live[0])  # a new certificate beside the old key: half a renewal
    assert reloader.reload() is False
    assert await server.serial() == before
    assert RELOADS.labels("refused")._value.get() == refused + 1


async def test_a_renewal_of_another_key_type_replaces_the_old_certificate(
    listener: tuple[Listener, CertificateReloader], ca: TestCA
) -> None:
    """OpenSSL keeps one certificate per key type in a context: an RSA pair loaded into the context of an ECDSA one
    would sit beside it, and clients preferring ECDSA would still get the old certificate."""
    server, reloader = listener
    cert, key = ca.issue(NAME, rsa_key=True)
    assert reloader.reload("renewed", (str(cert), str(key)))
    assert await server.serial() == serial_of(cert)
