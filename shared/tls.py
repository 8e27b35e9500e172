"""TLS server contexts: from files, from the store (built-in ACME), or self-signed.

From `POSTROOM_TLS_CERT`/`KEY` (reloaded when renewed: shared/certs.py), from the store when built-in ACME is on
(`POSTROOM_ACME_DIRECTORY`), or a self-signed pair made at start when neither is set.
"""

from __future__ import annotations

import datetime
import ssl
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Self

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pydantic import model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.certs import CertificateReloader, CertificateSource
from shared.errors import ConfigError
from shared.settings import ENV_PREFIX, Duration, OptionalPath, OptionalUrl

PAIR = f"{ENV_PREFIX}TLS_CERT/{ENV_PREFIX}TLS_KEY"


def self_signed_pair(hostname: str, directory: Path) -> tuple[Path, Path]:
    """Write a fresh self-signed certificate and key for `hostname` into `directory`."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname[:64])])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(hostname)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "postroom-selfsigned.crt", directory / "postroom-selfsigned.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    key_path.chmod(0o600)
    return cert_path, key_path


def server_context(cert: str | None, key: str | None, hostname: str) -> ssl.SSLContext:
    """A server-side context with modern defaults (TLS 1.2+)."""
    if not cert or not key:
        cert_path, key_path = self_signed_pair(hostname, Path(tempfile.mkdtemp(prefix="postroom-tls-")))
        cert, key = str(cert_path), str(key_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    return context


class ListenerTlsSettings(BaseSettings):
    """`POSTROOM_TLS_CERT`/`KEY`, mixed into the settings of every service with a TLS listener (ingress, POP3)."""

    # The same as CommonSettings': pydantic merges the configs of all bases, so a default one here would win.
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    tls_cert: OptionalPath = None
    tls_key: OptionalPath = None
    # How often the pair's files (cert-manager, certbot) or the store (ACME) are looked at for a renewal; SIGHUP
    # looks at once.
    tls_reload_interval: Duration = 60.0
    # Built-in ACME (the store orders the certificate, services/store/acme.py): set, the listeners serve the pair
    # the store keeps (a self-signed one until there is one).
    acme_directory: OptionalUrl = None

    @model_validator(mode="after")
    def _tls_pair(self) -> Self:
        # Half a pair is a mistake, never a wish for the self-signed fallback: serving that would hide it.
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError(f"{PAIR}: set both or neither (neither: a self-signed pair is made at start)")
        if self.tls_cert is not None and self.acme_directory is not None:
            raise ValueError(f"{PAIR} and {ENV_PREFIX}ACME_DIRECTORY: set one (files, or certificates from ACME)")
        return self

    def listener_tls(self, hostname: str) -> ssl.SSLContext:
        """The context every TLS listener of the service serves; an unreadable pair is a ConfigError."""
        return self.listener_certificates(hostname, ()).context

    def listener_certificates(
        self, hostname: str, listeners: Sequence[str], acme: CertificateSource | None = None
    ) -> CertificateReloader:
        """The context every TLS listener serves (`listeners` name them in the expiry metric), kept serving the
        files as they are renewed, or what `acme` (the store's pair) gives when ACME is on; an unreadable pair is a
        ConfigError."""
        cert, key = self.tls_cert, self.tls_key
        if cert is None or key is None:
            cert_path, key_path = self_signed_pair(hostname, Path(tempfile.mkdtemp(prefix="postroom-tls-")))
            cert, key = str(cert_path), str(key_path)
        try:
            context = server_context(cert, key, hostname)
        except (OSError, ssl.SSLError, ValueError) as exc:
            raise ConfigError(f"{PAIR}: cannot load the certificate and key: {exc}") from None
        source = acme if self.acme_directory is not None else None
        return CertificateReloader(context, cert, key, listeners, self.tls_reload_interval, source)
