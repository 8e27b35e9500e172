"""Listener certificates that renew without a restart: reloaded when their files change and on SIGHUP.

cert-manager and certbot renew by replacing the files (cert-manager through a symlink swap of the Secret volume);
built-in ACME keeps the pair in the store (services/store/certificates.py, a source beside the file source);
every mail daemon reloads on SIGHUP. Either way the new pair is loaded into a fresh context, so a half-written or
mismatched pair is refused (and counted) while the listeners keep the old one. The context every listener shares
hands each new handshake to the newest one from its SNI callback (which OpenSSL runs for every ClientHello, with or
without a server name): new handshakes get the new certificate, sessions already running keep theirs. A fresh
context rather than the pair loaded into the live one, because OpenSSL keeps one certificate per key type in a
context: an ECDSA renewal of an RSA certificate would otherwise leave the old RSA one served to clients preferring it.
`postroom_tls_certificate_expiry_timestamp_seconds{listener}` says when the served
certificate ends (an alert fires 14 days before).
"""

from __future__ import annotations

import asyncio
import os
import signal
import ssl
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from cryptography import x509
from prometheus_client import Counter, Gauge

from shared.logging import get_logger

log = get_logger(__name__)

EXPIRY = Gauge(
    "postroom_tls_certificate_expiry_timestamp_seconds",
    "When the certificate a TLS listener serves stops being valid (Unix time).",
    ["listener"],
)
RELOADS = Counter(
    "postroom_tls_certificate_reloads_total",
    "Certificate reloads (file change or SIGHUP): loaded, or refused (unreadable or mismatched; the old pair stays).",
    ["result"],
)


def not_after(cert_file: str | Path) -> float:
    """The end of validity of the first certificate in a PEM file (the server's own, before its chain)."""
    certificate = x509.load_pem_x509_certificate(Path(cert_file).read_bytes())
    return certificate.not_valid_after_utc.timestamp()


def _signature(path: str) -> tuple[int, int, int] | None:
    """What changes when a file is replaced or rewritten (stat follows symlinks: a swapped link counts)."""
    try:
        found = os.stat(path)
    except OSError:
        return None
    return (found.st_mtime_ns, found.st_size, found.st_ino)


class CertificateSource(Protocol):
    """Where renewed pairs come from: the configured files, or the store (built-in ACME, services/store)."""

    async def fetch(self) -> tuple[str, str] | None:
        """The paths of a pair that is new since the last call (to load now), or None."""
        ...

    def loaded(self) -> None:
        """The pair last given was loaded again (SIGHUP): not new any more."""
        ...


class FileSource:
    """`POSTROOM_TLS_CERT`/`KEY` as cert-manager or certbot renews them: new when either file changed."""

    def __init__(self, cert: str, key: str) -> None:
        self.cert = cert
        self.key = key
        self._seen = self._files()

    def _files(self) -> tuple[tuple[int, int, int] | None, tuple[int, int, int] | None]:
        return _signature(self.cert), _signature(self.key)

    async def fetch(self) -> tuple[str, str] | None:
        files = self._files()
        if files == self._seen:
            return None
        self._seen = files
        return self.cert, self.key

    def loaded(self) -> None:
        self._seen = self._files()


class CertificateReloader:
    """Keeps `context` serving the newest pair of `source`, starting with `cert`/`key` (what `context` was made
    with); `listeners` name the metric's series."""

    def __init__(
        self,
        context: ssl.SSLContext,
        cert: str,
        key: str,
        listeners: Sequence[str],
        interval: float = 60.0,
        source: CertificateSource | None = None,
    ) -> None:
        self.context = context
        self.serving = context  # the context new handshakes get: `context` itself until the first reload
        context.sni_callback = self._hand_over
        self.cert = cert
        self.key = key
        self.source: CertificateSource = source if source is not None else FileSource(cert, key)
        self.listeners = tuple(listeners)
        self.interval = interval
        self._wake = asyncio.Event()
        self._publish_expiry()

    def _publish_expiry(self) -> None:
        try:
            expires = not_after(self.cert)
        except (OSError, ValueError) as exc:
            log.warning("certificate expiry unreadable", cert=self.cert, error=str(exc))
            return
        for listener in self.listeners:
            EXPIRY.labels(listener).set(expires)

    def reload(self, why: str = "signal", pair: tuple[str, str] | None = None) -> bool:
        """Load `pair` (else the current one again) if it is whole and matches; True when the listeners now serve
        it."""
        cert, key = pair if pair is not None else (self.cert, self.key)
        try:
            fresh = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            fresh.minimum_version = self.context.minimum_version
            fresh.load_cert_chain(cert, key)  # a bad pair fails here, and the listeners never see it
        except (OSError, ssl.SSLError, ValueError) as exc:
            RELOADS.labels("refused").inc()
            log.error("certificate reload refused; the old one stays", why=why, cert=cert, error=str(exc))
            return False
        self.serving = fresh
        self.cert, self.key = cert, key
        RELOADS.labels("loaded").inc()
        self._publish_expiry()
        log.info("certificate reloaded", why=why, cert=cert, listeners=",".join(self.listeners))
        return True

    def _hand_over(self, connection: ssl.SSLObject | ssl.SSLSocket, _name: str | None, context: ssl.SSLContext) -> None:
        if self.serving is not context:
            connection.context = self.serving

    def _signal(self) -> None:
        self.reload()
        self.source.loaded()
        self._wake.set()  # and ask the source at once (the store may hold a newer pair than the files loaded)

    async def refresh(self, why: str = "renewed") -> bool:
        """Load the source's new pair if it has one; True when it was loaded."""
        pair = await self.source.fetch()
        return pair is not None and self.reload(why, pair)

    def install(self, loop: asyncio.AbstractEventLoop) -> bool:
        """Reload on SIGHUP, the reload signal of every mail daemon; False where the loop cannot take signals (a
        service run in-process on a thread, as some tests do)."""
        try:
            loop.add_signal_handler(signal.SIGHUP, self._signal)
        except (ValueError, RuntimeError, NotImplementedError):
            return False
        return True

    async def run(self, stop: asyncio.Event) -> None:
        """SIGHUP and the watch for a service's life: until `stop`, then the signal handler goes."""
        installed = self.install(asyncio.get_running_loop())
        try:
            await self.watch(stop)
        finally:
            if installed:
                asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)

    async def watch(self, stop: asyncio.Event) -> None:
        """Ask the source every `interval` seconds (or at once after SIGHUP) until `stop`; load what it gives."""
        stopping = asyncio.ensure_future(stop.wait())
        try:
            while not stop.is_set():
                woken = asyncio.ensure_future(self._wake.wait())
                await asyncio.wait({stopping, woken}, timeout=self.interval, return_when=asyncio.FIRST_COMPLETED)
                woken.cancel()
                self._wake.clear()
                if not stop.is_set():
                    await self.refresh("renewed")
        finally:
            stopping.cancel()
