"""Listener certificates that renew without a restart: reloaded when their files change and on SIGHUP.

cert-manager and certbot renew by replacing the files (cert-manager through a symlink swap of the Secret volume);
every mail daemon reloads on SIGHUP. Either way the new pair is first loaded into a scratch context, so a
half-written or mismatched pair is refused (and counted) while the listeners keep the old one; then it is loaded
into the live context, which every listener shares: new handshakes get the new certificate, sessions already
running keep theirs. `postroom_tls_certificate_expiry_timestamp_seconds{listener}` says when the served
certificate ends (an alert fires 14 days before).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import ssl
from collections.abc import Sequence
from pathlib import Path

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


class CertificateReloader:
    """Keeps `context` serving the pair in `cert`/`key`; `listeners` name the metric's series."""

    def __init__(
        self, context: ssl.SSLContext, cert: str, key: str, listeners: Sequence[str], interval: float = 60.0
    ) -> None:
        self.context = context
        self.cert = cert
        self.key = key
        self.listeners = tuple(listeners)
        self.interval = interval
        self._seen = self._files()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._publish_expiry()

    def _files(self) -> tuple[tuple[int, int, int] | None, tuple[int, int, int] | None]:
        return _signature(self.cert), _signature(self.key)

    def _publish_expiry(self) -> None:
        try:
            expires = not_after(self.cert)
        except (OSError, ValueError) as exc:
            log.warning("certificate expiry unreadable", cert=self.cert, error=str(exc))
            return
        for listener in self.listeners:
            EXPIRY.labels(listener).set(expires)

    def reload(self, why: str = "signal") -> bool:
        """Load the pair again if it is whole and matches; True when the listeners now serve it."""
        self._seen = self._files()
        try:
            scratch = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            scratch.load_cert_chain(self.cert, self.key)  # a bad pair fails here, not in the live context
            self.context.load_cert_chain(self.cert, self.key)
        except (OSError, ssl.SSLError, ValueError) as exc:
            RELOADS.labels("refused").inc()
            log.error("certificate reload refused; the old one stays", why=why, cert=self.cert, error=str(exc))
            return False
        RELOADS.labels("loaded").inc()
        self._publish_expiry()
        log.info("certificate reloaded", why=why, cert=self.cert, listeners=",".join(self.listeners))
        return True

    def changed(self) -> bool:
        return self._files() != self._seen

    def install(self, loop: asyncio.AbstractEventLoop) -> bool:
        """Reload on SIGHUP, the reload signal of every mail daemon; False where the loop cannot take signals (a
        service run in-process on a thread, as some tests do)."""
        try:
            loop.add_signal_handler(signal.SIGHUP, self.reload)
        except (ValueError, RuntimeError, NotImplementedError):
            return False
        self._loop = loop
        return True

    async def run(self, stop: asyncio.Event) -> None:
        """SIGHUP and the file watch for a service's life: until `stop`, then the signal handler goes."""
        installed = self.install(asyncio.get_running_loop())
        try:
            await self.watch(stop)
        finally:
            if installed:
                asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)

    async def watch(self, stop: asyncio.Event) -> None:
        """Check the files every `interval` seconds until `stop`; reload once they changed (cert-manager, certbot)."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.interval)
            if not stop.is_set() and self.changed():
                self.reload("files changed")
