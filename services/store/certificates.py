"""What built-in ACME keeps in Redis, and the listeners' certificate source that reads it back.

Redis holds the certificate, the account, the HTTP-01 answers and the ordering lock; every replica's listeners read
the certificate from there, so every replica serves the same one.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis.exceptions
from cryptography import x509

from services.store import lua
from services.store.keys import Keys
from services.store.part import Part, as_text
from shared.logging import get_logger

log = get_logger(__name__)

REDIS_ERRORS = (redis.exceptions.RedisError, OSError)


@dataclass(frozen=True)
class StoredCertificate:
    """A certificate chain (the server's certificate first) and its private key, both PEM."""

    chain: str
    key: str = field(repr=False)  # never in a log line or a traceback
    domains: tuple[str, ...]
    not_after: float
    version: str


@dataclass(frozen=True)
class AcmeAccount:
    """The ACME account the store orders with, at one directory (a new directory means a new account)."""

    directory: str
    key: str = field(repr=False)  # the account key as a JWK (JSON)
    uri: str


def _fields(found: dict[Any, Any]) -> dict[str, str]:
    return {as_text(name): as_text(value) for name, value in found.items()}


def certificate_version(chain: str, key: str) -> str:
    return hashlib.sha256(f"{chain}\n{key}".encode()).hexdigest()


class AcmeData(Part):
    """Single-key commands on the `acme:*` keys (services/store/keys.py)."""

    def __init__(self, redis: Any, keys: Keys) -> None:
        super().__init__(redis, keys)
        self._release = redis.register_script(lua.RELEASE_LOCK)

    async def certificate(self) -> StoredCertificate | None:
        found = await self.redis.hgetall(self.keys.acme_certificate)
        if not found:
            return None
        text = _fields(found)
        return StoredCertificate(
            chain=text["chain"],
            key=text["key"],
            domains=tuple(d for d in text.get("domains", "").split(",") if d),
            not_after=float(text.get("not_after", 0)),
            version=text["version"],
        )

    async def version(self) -> str | None:
        """What the listeners compare with what they serve: one small read per look."""
        value = await self.redis.hget(self.keys.acme_certificate, "version")
        return None if value is None else as_text(value)

    async def put_certificate(self, chain: str, key: str, domains: tuple[str, ...]) -> StoredCertificate:
        ends = x509.load_pem_x509_certificate(chain.encode()).not_valid_after_utc.timestamp()
        stored = StoredCertificate(chain, key, domains, ends, certificate_version(chain, key))
        # One HSET: a listener never reads the chain of one certificate with the key of another.
        await self.redis.hset(
            self.keys.acme_certificate,
            mapping={
                "chain": chain,
                "key": key,
                "domains": ",".join(domains),
                "not_after": repr(ends),
                "version": stored.version,
            },
        )
        return stored

    async def account(self) -> AcmeAccount | None:
        found = await self.redis.hgetall(self.keys.acme_account)
        if not found:
            return None
        text = _fields(found)
        return AcmeAccount(directory=text["directory"], key=text["key"], uri=text["uri"])

    async def put_account(self, account: AcmeAccount) -> None:
        mapping = {"directory": account.directory, "key": account.key, "uri": account.uri}
        await self.redis.hset(self.keys.acme_account, mapping=mapping)

    async def drop_account(self, uri: str) -> None:
        """Forget the account at `uri` (the CA no longer knows it); one another replica registered since stays."""
        found = await self.redis.hget(self.keys.acme_account, "uri")
        if found is not None and as_text(found) == uri:
            await self.redis.delete(self.keys.acme_account)

    async def put_challenge(self, token: str, validation: str, ttl: float) -> None:
        await self.redis.set(self.keys.acme_challenge(token), validation, px=max(1, round(ttl * 1000)))

    async def challenge(self, token: str) -> str | None:
        value = await self.redis.get(self.keys.acme_challenge(token))
        return None if value is None else as_text(value)

    async def drop_challenge(self, token: str) -> None:
        await self.redis.delete(self.keys.acme_challenge(token))

    async def lock(self, owner: str, ttl: float) -> bool:
        """Only one replica orders at a time; the TTL frees the lock of a replica that died while ordering."""
        return bool(await self.redis.set(self.keys.acme_lock, owner, nx=True, px=max(1, round(ttl * 1000))))

    async def unlock(self, owner: str) -> None:
        await self._release(keys=[self.keys.acme_lock], args=[owner])


class StoreCertificateSource:
    """The listeners' source (shared/certs.py) when ACME is on: the pair in the store, written to private files for
    `SSLContext.load_cert_chain`, which reads only files. New when the stored version differs from the one given."""

    def __init__(self, data: AcmeData) -> None:
        self.data = data
        self._given: str | None = None
        self._unreachable = False
        self._directory: Path | None = None

    async def fetch(self) -> tuple[str, str] | None:
        try:
            version = await self.data.version()
            if version is None or version == self._given:
                found = None
            else:
                found = await self.data.certificate()
        except REDIS_ERRORS as exc:
            if not self._unreachable:  # one line per outage, not one per look
                log.warning("certificate from the store unavailable; serving the current one", error=str(exc))
            self._unreachable = True
            return None
        self._unreachable = False
        if found is None:
            return None
        self._given = found.version
        return self._write(found)

    def loaded(self) -> None:
        """Nothing to note: the version given is already the one seen."""

    def _write(self, found: StoredCertificate) -> tuple[str, str]:
        if self._directory is None:
            self._directory = Path(tempfile.mkdtemp(prefix="postroom-acme-"))  # mode 0700
        cert, key = self._directory / "cert.pem", self._directory / "key.pem"
        for path, text in ((key, found.key), (cert, found.chain)):
            scratch = path.with_suffix(".new")
            descriptor = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(descriptor, "w") as out:
                out.write(text)
            os.replace(scratch, path)
        return str(cert), str(key)
