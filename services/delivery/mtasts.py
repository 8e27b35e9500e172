"""MTA-STS (RFC 8461): a domain's published demand that mail to it travel over verified TLS to listed MX hosts.

Discovery is the `_mta-sts.<domain>` TXT record (`v=STSv1; id=...`); the policy itself is fetched over verified
HTTPS from `https://mta-sts.<domain>/.well-known/mta-sts.txt` and cached for its `max_age` in the store, shared by
every delivery replica (§3.3). A policy is fetched again only when the TXT id changes or the cache expired; when
the fetch fails, the cached policy (if any) stays in force, and with none the domain is treated as having no
policy (§5.1), counted for TLS-RPT as `sts-policy-fetch-error`.
"""

from __future__ import annotations

import asyncio
import re
import socket
import ssl
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from services.delivery import metrics
from services.delivery.mx import MailResolver
from services.store import TlsPolicies
from shared.errors import PostroomError
from shared.logging import get_logger

log = get_logger(__name__)

MAX_POLICY_BYTES = 64 * 1024  # RFC 8461 §3.2: a policy larger than this need not be processed
MAX_AGE_LIMIT = 31_557_600  # §3.2: max_age is at most one year
_TXT = re.compile(r"^v=STSv1;", re.IGNORECASE)
# How long one replica reuses a discovery (the TXT lookup and the cached policy) before asking DNS again.
REDISCOVER_AFTER = 300.0
_ID = re.compile(r"(?:^|;)\s*id=([A-Za-z0-9]{1,32})\s*(?:;|$)")


class PolicyError(ValueError):
    """A policy file that does not follow RFC 8461 §3.2."""


@dataclass(frozen=True)
class StsPolicy:
    """A domain's MTA-STS policy: `mode` enforce, testing or none; `mx` the host patterns allowed."""

    domain: str
    id: str
    mode: str
    mx: tuple[str, ...]
    max_age: int
    fetched: float

    @property
    def enforced(self) -> bool:
        return self.mode == "enforce"

    def expired(self, now: float) -> bool:
        return now >= self.fetched + self.max_age

    def allows(self, host: str) -> bool:
        """RFC 8461 §4.1: an MX host matches a pattern exactly, or `*.example.com` by one left-most label."""
        host = host.lower().rstrip(".")
        for pattern in self.mx:
            if pattern.startswith("*."):
                label, _, rest = host.partition(".")
                if label and rest == pattern[2:]:
                    return True
            elif host == pattern:
                return True
        return False


def txt_id(records: Sequence[str]) -> str | None:
    """The policy id of the one `v=STSv1` TXT record (§3.1); None when there is none, or more than one."""
    found = [record for record in records if _TXT.match(record.strip())]
    if len(found) != 1:
        return None
    match = _ID.search(found[0].strip())
    return match.group(1) if match else None


def parse_policy(domain: str, policy_id: str, text: str, now: float) -> StsPolicy:
    """The policy file: `key: value` lines (CRLF or LF), version STSv1, a mode, max_age, and mx lines unless the
    mode is none."""
    fields: dict[str, list[str]] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        key, sep, value = line.partition(":")
        if not sep:
            raise PolicyError(f"not a key: value line: {line[:60]!r}")
        fields.setdefault(key.strip().lower(), []).append(value.strip())
    if fields.get("version") != ["STSv1"]:
        raise PolicyError("version is not STSv1")
    mode = (fields.get("mode") or [""])[0]
    if mode not in ("enforce", "testing", "none"):
        raise PolicyError(f"unknown mode {mode!r}")
    try:
        max_age = int((fields.get("max_age") or [""])[0])
    except ValueError:
        raise PolicyError("max_age is not a number") from None
    if not 0 <= max_age <= MAX_AGE_LIMIT:
        raise PolicyError(f"max_age {max_age} out of range")
    mx = tuple(pattern.lower().rstrip(".") for pattern in fields.get("mx", []))
    if mode != "none" and not mx:
        raise PolicyError("no mx line")
    return StsPolicy(domain, policy_id, mode, mx, max_age, now)


class _PolicyHostResolver(AbstractResolver):
    """aiohttp resolves the policy host with the delivery's own resolver (POSTROOM_DNS_NAMESERVERS)."""

    def __init__(self, resolver: MailResolver) -> None:
        self.resolver = resolver

    async def resolve(self, host: str, port: int = 0, family: int = socket.AF_INET) -> list[ResolveResult]:
        try:
            addresses = await self.resolver.addresses(host)
        except PostroomError as exc:
            raise OSError(f"cannot resolve {host}: {exc.message}") from None
        if not addresses:
            raise OSError(f"{host} has no address")
        return [
            {
                "hostname": host,
                "host": address,
                "port": port,
                "family": socket.AF_INET6 if ":" in address else socket.AF_INET,
                "proto": 0,
                "flags": socket.AI_NUMERICHOST,
            }
            for address in addresses
        ]

    async def close(self) -> None:
        return None


class MtaSts:
    """Finds the MTA-STS policy in force for a domain (None: no policy)."""

    def __init__(
        self, resolver: MailResolver, cache: TlsPolicies, context: ssl.SSLContext, timeout: float = 30.0
    ) -> None:
        self.resolver = resolver
        self.cache = cache
        self.context = context
        self.timeout = timeout
        self._session: aiohttp.ClientSession | None = None
        self._fetching: dict[str, asyncio.Task[StsPolicy | None]] = {}
        self._known: dict[str, tuple[float, StsPolicy | None]] = {}  # domain -> (until, policy): the hot path

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def policy(self, domain: str) -> StsPolicy | None:
        """The policy for `domain`; concurrent deliveries to one domain share one discovery, and later ones reuse
        it for REDISCOVER_AFTER seconds."""
        now = time.monotonic()
        known = self._known.get(domain)
        if known is not None and now < known[0]:
            return known[1]
        task = self._fetching.get(domain)
        if task is None:
            task = asyncio.ensure_future(self._discover(domain))
            self._fetching[domain] = task
            task.add_done_callback(lambda _: self._fetching.pop(domain, None))
        policy = await asyncio.shield(task)
        if len(self._known) > 10_000:
            self._known.clear()
        self._known[domain] = (now + REDISCOVER_AFTER, policy)
        return policy

    async def _discover(self, domain: str) -> StsPolicy | None:
        now = time.time()
        cached = await self._cached(domain)
        try:
            records = await self.resolver.txt(f"_mta-sts.{domain}")
        except PostroomError:
            records = []  # a DNS failure: whatever is cached stays in force (§5.1)
        policy_id = txt_id(records)
        if policy_id is None or (cached is not None and cached.id == policy_id):
            return cached
        try:
            fetched = await self._fetch(domain, policy_id, now)
        except (PolicyError, aiohttp.ClientError, OSError, TimeoutError, ssl.SSLError) as exc:
            metrics.tls_policy("mta-sts", "fetch-error").inc()
            log.info("mta-sts policy fetch failed", domain=domain, error=f"{type(exc).__name__}: {exc}")
            return cached
        await self.cache.cache_policy(domain, asdict(fetched), fetched.max_age)
        log.info("mta-sts policy", domain=domain, mode=fetched.mode, mx=",".join(fetched.mx), max_age=fetched.max_age)
        return fetched

    async def _cached(self, domain: str) -> StsPolicy | None:
        found = await self.cache.cached_policy(domain)
        if found is None:
            return None
        try:
            policy = StsPolicy(**{**found, "mx": tuple(found.get("mx", ()))})
        except TypeError:
            return None
        return None if policy.expired(time.time()) else policy

    async def _fetch(self, domain: str, policy_id: str, now: float) -> StsPolicy:
        """GET the policy over HTTPS whose certificate verifies for mta-sts.<domain>; no redirects (§3.3)."""
        if self._session is None:
            connector = aiohttp.TCPConnector(ssl=self.context, resolver=_PolicyHostResolver(self.resolver))
            self._session = aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(self.timeout))
        url = f"https://mta-sts.{domain}/.well-known/mta-sts.txt"
        async with self._session.get(url, allow_redirects=False) as response:
            if response.status != 200:
                raise PolicyError(f"HTTP {response.status} from {url}")
            if not response.content_type.startswith("text/plain"):
                raise PolicyError(f"content type {response.content_type} is not text/plain")
            body = await response.content.read(MAX_POLICY_BYTES + 1)
        if len(body) > MAX_POLICY_BYTES:
            raise PolicyError("policy larger than 64 KiB")
        return parse_policy(domain, policy_id, body.decode("utf-8", "replace"), now)
