"""DKIM signing of relayed mail from local domains (RFC 6376 rsa-sha256, RFC 8463 ed25519-sha256) with dkimpy.

A message is signed when its one From address is in a domain with keys in the store (or a subdomain of one, as
the bounces of MAILER-DAEMON@our host name are: relaxed DMARC alignment takes a parent domain's signature), and it
is ours to vouch for: submitted by an authenticated user or a client in POSTROOM_TRUSTED_NETWORKS, or composed here
(bounces, delay notices: no client address). The oldest key of each algorithm signs, so a new key starts signing
only once the old one is removed (rotation: generate, publish, wait for DNS, remove the old). An Ed25519 key adds a
second signature next to the RSA one.

A failure to sign (Redis unreachable with no cached keys, a damaged key) never holds mail back: the message goes
out unsigned, and the failure is logged and counted (`postroom_delivery_dkim_signatures_total{result="failed"}`,
alerted on). Deferring instead would stop all outbound mail of every local domain for one bad key or a Redis
outage, while an unsigned message still passes DMARC where SPF aligns and at worst lands in a spam folder.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import getaddresses

import dkim
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from dkim.canonicalization import CanonicalizationPolicy, compress_whitespace, strip_trailing_whitespace

from services.delivery import metrics
from services.store import DkimKey, DkimKeys
from services.store.dkim import ascii_domain
from shared.dotstuff import CRLF, LineEnds
from shared.envelope import Envelope
from shared.logging import get_logger
from shared.netaddr import Network, in_networks
from shared.spool import MEMORY_LIMIT

log = get_logger(__name__)

# Keys are read again after this long, so a key generated or removed takes effect within a minute.
KEY_TTL = 60.0
MAX_CACHED_DOMAINS = 10_000
CHUNK = 64 * 1024
CANONICALIZATION = b"relaxed/relaxed"
POLICY = CanonicalizationPolicy.from_c_value(CANONICALIZATION)
# RFC 6376 §5.4.1's list, less what mailing lists and forwarders rewrite for good reason; each occurrence present is
# signed, and From once more than it occurs (oversigning, §8.15): nobody can add a second From after us.
SIGNED_HEADERS = frozenset(
    {
        b"from", b"reply-to", b"sender", b"subject", b"date", b"message-id", b"to", b"cc", b"mime-version",
        b"content-type", b"content-transfer-encoding", b"content-id", b"content-description", b"in-reply-to",
        b"references", b"list-id", b"list-help", b"list-unsubscribe", b"list-unsubscribe-post", b"list-subscribe",
        b"list-post", b"list-owner", b"list-archive", b"resent-date", b"resent-from", b"resent-sender", b"resent-to",
        b"resent-cc", b"resent-message-id",
    }
)  # fmt: skip
OVERSIGNED = frozenset({b"from"})
_WSP_TAIL = re.compile(rb"[ \t]*\Z")


def relaxed_body_hash(body: memoryview, chunk: int = CHUNK) -> bytes:
    """The base64 SHA-256 of the body in relaxed canonicalization (RFC 6376 §3.4.4), read a chunk at a time.

    dkimpy canonicalizes the whole body at once (four whole copies of a 25 MiB body); this feeds its own
    canonicalization functions line-aligned pieces instead, holding back only empty lines at the end (which the
    algorithm drops) and white space at a cut. The body is taken as the wire carries it: line ends made CRLF as
    smtpdata.py sends them, and a final CRLF where the message lacks one. tests/delivery/test_dkim_hash.py checks it
    against dkimpy's canonicalize_body.
    """
    hasher = hashlib.sha256()
    ends = LineEnds()
    carry = b""
    blank = 0  # empty lines seen after the last line with content: hashed only if content follows
    mid_line = False  # content of an unfinished line was hashed already

    def lines(complete: bytes) -> None:
        """Canonicalize and hash CRLF-terminated lines (the first maybe the rest of a line begun before)."""
        nonlocal blank, mid_line
        canonical = compress_whitespace(strip_trailing_whitespace(complete))
        if mid_line and canonical.startswith(CRLF):
            hasher.update(CRLF)
            canonical = canonical[2:]
        mid_line = False
        content = canonical.rstrip(b"\r\n")
        if not content:
            blank += canonical.count(CRLF)
            return
        flush_blank()
        hasher.update(content)
        hasher.update(CRLF)
        blank = (len(canonical) - len(content)) // 2 - 1

    def flush_blank() -> None:
        nonlocal blank
        while blank:
            step = min(blank, 4096)
            hasher.update(CRLF * step)
            blank -= step

    for start in range(0, len(body), chunk):
        data = carry + ends.feed(bytes(body[start : start + chunk]))
        found = data.rfind(CRLF)
        cut = 0 if found < 0 else found + 2
        if cut:
            lines(data[:cut])
        carry = data[cut:]
        if len(carry) > chunk:
            # A very long line: hash its content up to the white space at its end, which a CRLF may yet strip.
            keep = _WSP_TAIL.search(carry)
            head = carry[: keep.start()] if keep else carry
            if head:
                if not mid_line:
                    flush_blank()
                hasher.update(compress_whitespace(head))
                mid_line = True
                carry = carry[len(head) :]
    carry += ends.finish()
    if carry or mid_line:
        lines(carry if carry.endswith(CRLF) else carry + CRLF)
    return base64.b64encode(hasher.digest())


def signature_header(header_section: bytes, key: DkimKey, body_hash: bytes, now: int) -> bytes:
    """One `DKIM-Signature:` field (CRLF-terminated) over `header_section` and a body hash computed beforehand.

    What dkimpy's `DKIM.sign` makes, with c=relaxed/relaxed and our header list, built from dkimpy's own parts (its
    header parser and list of headers to sign, `fold`, `RE_BTAG`, `hash_headers`, the canonicalization). It differs
    in two steps of `DomainSigner.gen_header`, which this repeats: the body hash comes as an argument, so the body
    need not be handed over whole (see relaxed_body_hash), and the RSA signature is OpenSSL's (cryptography) instead
    of dkimpy's pure-Python one: 0.5 ms instead of 7 ms for RSA-2048. Both signatures are deterministic, so
    tests/delivery/test_dkim_hash.py checks byte for byte that dkimpy's `sign` makes the same field; it fails when
    a dkimpy release changes what `sign` makes.
    """
    algorithm = b"rsa-sha256" if key.algorithm == "rsa" else b"ed25519-sha256"
    signer = dkim.DKIM(header_section, signature_algorithm=algorithm, linesep=CRLF)
    signer.should_sign = set(SIGNED_HEADERS)
    signer.frozen_sign = set(OVERSIGNED)
    include = tuple(name.lower() for name in signer.default_sign_headers())
    domain = ascii_domain(key.domain).encode()
    fields = [
        (b"v", b"1"),
        (b"a", algorithm),
        (b"c", CANONICALIZATION),
        (b"d", domain),
        (b"i", b"@" + domain),
        (b"q", b"dns/txt"),
        (b"s", key.selector.encode()),
        (b"t", str(now).encode()),
        (b"h", b" : ".join(include)),
        (b"bh", body_hash),
        (b"b", b"0" * 60),  # dkimpy's placeholder: b= folds onto a line of its own
    ]
    name = b"DKIM-Signature"
    unsigned = dkim.RE_BTAG.sub(b"\\1", dkim.fold(b"; ".join(b"=".join(f) for f in fields), len(name), CRLF))
    hasher = hashlib.sha256()
    # RFC 6376 §3.7: the signed fields, then this one with an empty b=, canonicalized (dkimpy's hash_headers).
    dkim.hash_headers(hasher, POLICY, POLICY.canonicalize_headers(signer.headers), include, (name, b" " + unsigned), {})
    signature = base64.b64encode(_private_key(key.algorithm, key.private_key)(hasher.digest()))
    fields[-1] = (b"b", signature)
    folded: bytes = dkim.fold(b"; ".join(b"=".join(f) for f in fields) + CRLF, len(name), CRLF)
    return name + b": " + folded


@functools.lru_cache(maxsize=256)
def _private_key(algorithm: str, text: str) -> Callable[[bytes], bytes]:
    """Signs a header hash: RSASSA-PKCS1-v1_5 over SHA-256 (RFC 6376 §3.3.1), or Ed25519 over the hash itself
    (RFC 8463 §3); parsed once per key."""
    if algorithm == "rsa":
        rsa_key = serialization.load_pem_private_key(text.encode(), None)
        if not isinstance(rsa_key, rsa.RSAPrivateKey):
            raise ValueError("not an RSA private key")
        return lambda digest: rsa_key.sign(digest, padding.PKCS1v15(), Prehashed(hashes.SHA256()))
    ed_key = ed25519.Ed25519PrivateKey.from_private_bytes(base64.b64decode(text, validate=True))
    return ed_key.sign


def header_section(message: bytes) -> tuple[bytes, int]:
    """The header section (ending in CRLF) and where the body starts; no empty line: all header, no body."""
    end = message.find(b"\r\n\r\n")
    if end < 0:
        return message if message.endswith(CRLF) else message + CRLF, len(message)
    return message[: end + 2], end + 4


def from_domain(headers: bytes) -> str | None:
    """The domain of the message's one From address (RFC 5322 §3.6.2); None when there is not exactly one."""
    values = [v for name, v in dkim.rfc822_parse(headers)[0] if name.lower() == b"from"]
    if len(values) != 1:
        return None
    addresses = [a for _, a in getaddresses([values[0].decode("utf-8", "replace")]) if a]
    if len(addresses) != 1 or "@" not in addresses[0]:
        return None
    domain = addresses[0].rpartition("@")[2].strip().rstrip(".").lower()
    return domain or None


def candidate_domains(domain: str) -> list[str]:
    """The domain and its parents down to two labels: where a key that aligns with it (relaxed DMARC) may be."""
    labels = domain.split(".")
    return [".".join(labels[i:]) for i in range(max(1, len(labels) - 1))]


@dataclass
class _Cached:
    keys: list[DkimKey]
    expires: float


class KeyCache:
    """The keys of each domain, read from the store at most once per KEY_TTL; stale ones serve while Redis fails."""

    def __init__(self, store: DkimKeys, ttl: float = KEY_TTL, clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.ttl = ttl
        self.clock = clock
        self._entries: dict[str, _Cached] = {}

    async def keys(self, domain: str) -> list[DkimKey]:
        now = self.clock()
        entry = self._entries.get(domain)
        if entry is not None and entry.expires > now:
            return entry.keys
        try:
            keys = await self.store.keys_of(domain)
        except Exception as exc:
            if entry is None:
                raise
            log.warning("dkim keys not refreshed; using the cached ones", domain=domain, error=str(exc))
            return entry.keys
        if len(self._entries) >= MAX_CACHED_DOMAINS:
            self._entries.clear()  # bounded: From domains of forwarded mail are anyone's
        self._entries[domain] = _Cached(keys, now + self.ttl)
        return keys


def signing_keys(keys: list[DkimKey]) -> list[DkimKey]:
    """The oldest key of each algorithm, RSA first: the established selectors whose records are published."""
    chosen: dict[str, DkimKey] = {}
    for key in keys:  # oldest first
        chosen.setdefault(key.algorithm, key)
    return [chosen[a] for a in ("rsa", "ed25519") if a in chosen]


class Signer:
    """Makes the DKIM-Signature fields to put in front of a relayed message; never raises, never holds mail."""

    def __init__(self, keys: KeyCache, trusted_networks: tuple[Network, ...], enabled: bool = True) -> None:
        self.cache = keys
        self.trusted_networks = trusted_networks
        self.enabled = enabled

    def ours(self, envelope: Envelope) -> bool:
        """We vouch for it: composed here, submitted with AUTH, or from a trusted network (as for relaying)."""
        address = envelope.client_address
        return not address or bool(envelope.auth_user) or in_networks(address, self.trusted_networks)

    async def sign(self, envelope: Envelope, message: bytes) -> bytes:
        """The signature fields (CRLF-terminated), or b"" when the message is not ours to sign or signing failed."""
        if not self.enabled:
            return b""
        try:
            headers, body_start = header_section(message)
            keys = await self._keys(envelope, headers)
            if not keys:
                metrics.DKIM_SKIPPED.inc()
                return b""
            body = memoryview(message)[body_start:]
            if len(body) > MEMORY_LIMIT:
                body_hash = await asyncio.to_thread(relaxed_body_hash, body)  # a large body off the event loop
            else:
                body_hash = relaxed_body_hash(body)
            now = int(time.time())
            fields = b"".join(signature_header(headers, key, body_hash, now) for key in keys)
        except Exception as exc:
            metrics.DKIM_FAILED.inc()
            log.error(
                "dkim signing failed; sent unsigned", queue_id=envelope.queue_id, error=f"{type(exc).__name__}: {exc}"
            )
            return b""
        metrics.DKIM_SIGNED.inc()
        return fields

    async def _keys(self, envelope: Envelope, headers: bytes) -> list[DkimKey]:
        if not self.ours(envelope):
            return []
        domain = from_domain(headers)
        if domain is None:
            return []
        for candidate in candidate_domains(domain):
            keys = await self.cache.keys(candidate)
            if keys:
                return signing_keys(keys)
        return []
