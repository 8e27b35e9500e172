"""DKIM keys of the local domains: one or more selectors per domain, RSA-2048 (RFC 6376) or Ed25519 (RFC 8463)."""

from __future__ import annotations

import base64
import json
import re
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from services.store.accounts import AccountError, ConflictError, NotFoundError
from services.store.addresses import validate_domain
from services.store.part import Part, as_text

Algorithm = Literal["rsa", "ed25519"]
ALGORITHMS: tuple[Algorithm, ...] = ("rsa", "ed25519")
# RFC 8301 §3.2: at least 1024 bits, 2048 recommended; 2048 still fits a TXT record most DNS hosts take.
RSA_BITS = 2048
# A selector is a dot-separated list of DNS labels (RFC 6376 §3.1, sub-domain of RFC 5321).
_SELECTOR = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)(\.(?!-)[a-z0-9-]{1,63}(?<!-))*$")
MAX_SELECTOR = 200
# Character strings of a TXT record hold at most 255 octets each (RFC 1035 §3.3.14): longer values are split.
_TXT_STRING = 250


@dataclass(frozen=True)
class DkimKey:
    """One key pair of a domain; `private_key` is what dkimpy signs with (PKCS#1 PEM, or the base64 Ed25519 seed)."""

    domain: str
    selector: str
    algorithm: Algorithm
    created: float
    public_key: str  # base64, as the record's p= carries it
    private_key: str = field(repr=False)  # never in a log line or a traceback

    @property
    def dns_name(self) -> str:
        """Where the public key is published (RFC 6376 §3.6.2.1), the domain as an A-label."""
        return f"{self.selector}._domainkey.{ascii_domain(self.domain)}"

    @property
    def record(self) -> str:
        """The TXT record's text (RFC 6376 §3.6.1); `k=` names the key type, `ed25519` per RFC 8463."""
        return f"v=DKIM1; k={self.algorithm}; p={self.public_key}"

    @property
    def zone_line(self) -> str:
        """A zone-file line to paste, the text split into strings a TXT record can hold."""
        text = self.record
        strings = " ".join(f'"{text[i : i + _TXT_STRING]}"' for i in range(0, len(text), _TXT_STRING))
        return f"{self.dns_name}. IN TXT {strings}"

    def public(self) -> dict[str, Any]:
        """What show, list and the API give out: never the private key."""
        return {
            "domain": self.domain,
            "selector": self.selector,
            "algorithm": self.algorithm,
            "created": self.created,
            "name": self.dns_name,
            "record": self.record,
        }


def ascii_domain(domain: str) -> str:
    return domain if domain.isascii() else domain.encode("idna").decode("ascii")


def validate_selector(selector: str) -> str:
    selector = selector.strip().lower()
    if len(selector) > MAX_SELECTOR or not _SELECTOR.match(selector):
        raise AccountError(f"bad selector {selector!r}: DNS labels of letters, digits and hyphens, dot-separated")
    return selector


def default_selector(algorithm: Algorithm, now: float) -> str:
    """`rsa-20261202`, `ed25519-20261202`: unique per algorithm and day, and says when the key was made."""
    return f"{algorithm}-{time.strftime('%Y%m%d', time.gmtime(now))}"


def new_key_pair(algorithm: Algorithm) -> tuple[str, str]:
    """(public p= value, private key as dkimpy reads it)."""
    if algorithm == "rsa":
        key = rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
        # dkimpy parses PKCS#1 ("RSA PRIVATE KEY"); p= is the SubjectPublicKeyInfo in DER (RFC 6376 §3.6.1).
        private = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
        ).decode()
        public = key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return base64.b64encode(public).decode(), private
    if algorithm == "ed25519":
        seed = ed25519.Ed25519PrivateKey.generate()
        raw_private = seed.private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
        )
        # RFC 8463 §4.2: p= is the base64 of the raw 32-byte public key; dkimpy signs with the base64 seed.
        raw_public = seed.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return base64.b64encode(raw_public).decode(), base64.b64encode(raw_private).decode()
    raise AccountError(f"unknown algorithm {algorithm!r}: use rsa or ed25519")


class DkimKeys(Part):
    """The `{ns}:dkim:{domain}` hashes: selector -> JSON of one key (single-key commands only)."""

    async def _local(self, domain: str) -> str:
        domain = validate_domain(domain)
        if not await self.redis.sismember(self.keys.domains, domain):
            raise NotFoundError(f"no such domain {domain}")
        return domain

    async def generate(self, domain: str, selector: str | None = None, algorithm: str = "rsa") -> DkimKey:
        """A new key for a local domain under a selector not in use there."""
        if algorithm not in ALGORITHMS:
            raise AccountError(f"unknown algorithm {algorithm!r}: use rsa or ed25519")
        domain = await self._local(domain)
        now = time.time()
        chosen: Algorithm = "rsa" if algorithm == "rsa" else "ed25519"
        selector = validate_selector(selector) if selector is not None else default_selector(chosen, now)
        public, private = new_key_pair(chosen)
        key = DkimKey(domain, selector, chosen, now, public, private)
        fields = {"algorithm": chosen, "created": now, "public_key": public, "private_key": private}
        if not await self.redis.hsetnx(self.keys.dkim(domain), selector, json.dumps(fields)):
            raise ConflictError(f"selector {selector} of {domain} exists; choose another with --selector")
        return key

    async def show(self, domain: str) -> list[DkimKey]:
        """A local domain's keys, oldest first; NotFoundError for a domain that is not local."""
        domain = await self._local(domain)
        return await self.keys_of(domain)

    async def keys_of(self, domain: str) -> list[DkimKey]:
        """The keys stored for `domain` (none for a domain that is not local), oldest first: for the signer."""
        raw = await self.redis.hgetall(self.keys.dkim(domain))
        found = []
        for selector, value in raw.items():
            fields = json.loads(as_text(value))
            found.append(
                DkimKey(
                    domain,
                    as_text(selector),
                    fields["algorithm"],
                    float(fields["created"]),
                    fields["public_key"],
                    fields["private_key"],
                )
            )
        return sorted(found, key=lambda k: (k.created, k.selector))

    async def remove(self, domain: str, selector: str) -> bool:
        domain = validate_domain(domain)
        return bool(await self.redis.hdel(self.keys.dkim(domain), selector.strip().lower()))
