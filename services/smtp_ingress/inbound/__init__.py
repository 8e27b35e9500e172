"""Inbound authentication of mail on the MX listener: SPF, DKIM, DMARC and ARC, into one Authentication-Results:."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from services.smtp_ingress import metrics, replies
from services.smtp_ingress.config import IngressSettings
from services.smtp_ingress.inbound import dmarc
from services.smtp_ingress.inbound.dkim import DkimResult, verify_arc, verify_dkim
from services.smtp_ingress.inbound.dns import InboundResolver
from services.smtp_ingress.inbound.header import QUARANTINE_HEADER, read_head, results_header, safe_domain
from services.smtp_ingress.inbound.spf import SpfResult, check_host
from services.smtp_ingress.replies import Reply
from shared.logging import get_logger
from shared.spool import MessageSpool

log = get_logger(__name__)

T = TypeVar("T")

# The header block is looked for in this much of the message (as the ingress does for Message-ID).
HEAD_LIMIT = 256 * 1024
# Every check of one message together, DNS included; RFC 7208 §4.6.4 gives SPF 20 seconds.
CHECK_DEADLINE = 25.0
# Worker threads for the libraries that block (pyspf, dkimpy): mostly waiting on DNS, so more than the cores.
THREADS = 16
SPF_CACHE_SIZE = 10_000
_SIGNED = (b"dkim-signature:", b"arc-seal:")


@dataclass(frozen=True, slots=True)
class InboundVerdict:
    """What the checks decided: a reply that refuses the message (DMARC reject, enforced) or the headers to put in
    front of it and the spool to publish (a new one when forged fields were taken out of the header block)."""

    reply: Reply | None
    headers: bytes
    spool: MessageSpool


class InboundChecks:
    """One per ingress process; `check` is called at the end of DATA for unauthenticated mail on port 25."""

    def __init__(self, settings: IngressSettings) -> None:
        self.authserv_id = settings.authserv_id or settings.hostname
        self.enforce = settings.dmarc_enforce
        self.spool_dir = settings.smtp_spool_dir
        self.timeout = settings.inbound_dns_timeout
        self.resolver = InboundResolver(settings.dns_nameservers, self.timeout, settings.inbound_dns_cache_size)
        self._executor = ThreadPoolExecutor(THREADS, thread_name_prefix="inbound-check")
        self._spf_cache: dict[tuple[str, str, str], tuple[float, str]] = {}
        self._series: dict[tuple[str, str], Any] = {}

    def applies(self, server: Any, session: Any) -> bool:
        """Port 25 only; never for an authenticated session or a trusted network (they are ours to vouch for)."""
        return bool(server.listener == "smtp" and not session.authenticated and not server.trusted)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def check(self, client_ip: str, helo: str | None, mail_from: str, spool: MessageSpool) -> InboundVerdict:
        """Never raises: a check that cannot finish reports temperror and the mail flows."""
        head = spool.head(HEAD_LIMIT)
        facts = read_head(head, self.authserv_id)
        helo_domain = safe_domain(helo) if helo and "." in helo and not helo.startswith("[") else None
        loop = asyncio.get_running_loop()
        spf_mail, spf_helo, dkims, arc = await self._results(loop, client_ip, mail_from, helo_domain, head, spool)
        sender_domain = safe_domain(mail_from.rpartition("@")[2]) if mail_from else helo_domain
        spf_for_dmarc = (spf_mail.result, sender_domain) if sender_domain else None
        passes = [d.domain for d in dkims if d.result == "pass" and d.domain]
        # No deadline of its own: at most two lookups, each bounded by the resolver's lifetime.
        verdict = await dmarc.evaluate(self.resolver.txt, facts.from_domain, spf_for_dmarc, passes)
        self._count(spf_mail, spf_helo, dkims, arc, verdict)
        lines = _resinfo(mail_from, sender_domain, spf_mail, helo_domain, spf_helo, dkims, arc, verdict, facts)
        if verdict.disposition == "reject" and self.enforce:
            log.info("dmarc reject", client=client_ip, domain=facts.from_domain)
            return InboundVerdict(replies.DMARC_REJECTED, b"", spool)
        extra = results_header(self.authserv_id, lines)
        if verdict.disposition in ("reject", "quarantine"):
            extra += QUARANTINE_HEADER
        if facts.cleaned is not None:
            spool = self._rewritten(spool, facts.cleaned, facts.head_length)
        return InboundVerdict(None, extra, spool)

    async def _results(
        self,
        loop: asyncio.AbstractEventLoop,
        client_ip: str,
        mail_from: str,
        helo_domain: str | None,
        head: bytes,
        spool: MessageSpool,
    ) -> tuple[SpfResult, SpfResult, list[DkimResult], str | None]:
        """SPF of MAIL FROM and of HELO, DKIM and ARC; what is not in the caches is worked out concurrently."""
        # Answered from the result cache where possible, without a task: the usual case on a warm cache.
        spf_mail = self._spf_cached(loop, client_ip, mail_from, helo_domain)
        check_helo = bool(helo_domain and mail_from)
        spf_helo = self._spf_cached(loop, client_ip, "", helo_domain) if check_helo else SpfResult("none", 0.0)
        lowered = head.lower()
        signed = any(marker in lowered for marker in _SIGNED)
        if spf_mail is not None and spf_helo is not None and not signed:
            return spf_mail, spf_helo, [], None
        mail, helo, (dkims, arc) = await asyncio.gather(
            _ready(spf_mail) if spf_mail else self._spf(loop, client_ip, mail_from, helo_domain),
            _ready(spf_helo) if spf_helo else self._spf(loop, client_ip, "", helo_domain),
            self._signatures(loop, spool, b"arc-seal:" in lowered) if signed else _ready(([], None)),
        )
        return mail, helo, dkims, arc

    # -- SPF ------------------------------------------------------------------------------------------------
    def _spf_cached(self, loop: asyncio.AbstractEventLoop, ip: str, sender: str, helo: str | None) -> SpfResult | None:
        """The result of the same inputs while the shortest TTL of the records it consulted lasts; else None."""
        if not sender and not helo:
            return SpfResult("none", 0.0)
        cached = self._spf_cache.get((ip, sender.lower(), (helo or "").lower()))
        now = loop.time()
        if cached is not None and cached[0] > now:
            return SpfResult(cached[1], cached[0] - now)
        return None

    async def _spf(self, loop: asyncio.AbstractEventLoop, ip: str, sender: str, helo: str | None) -> SpfResult:
        """check_host() for `sender` (empty: the HELO identity) in a worker thread; the result goes in the cache."""
        key = (ip, sender.lower(), (helo or "").lower())
        now = loop.time()
        bridge = self.resolver.bridge(loop)
        result = await self._bounded(
            loop.run_in_executor(self._executor, check_host, bridge, ip, sender, helo or ""),
            SpfResult("temperror", 0.0),
        )
        if result.ttl > 0:
            if len(self._spf_cache) >= SPF_CACHE_SIZE:
                self._spf_cache.clear()  # bounded; the next messages simply evaluate again
            self._spf_cache[key] = (now + result.ttl, result.result)
        return result

    # -- DKIM and ARC ---------------------------------------------------------------------------------------
    async def _signatures(
        self, loop: asyncio.AbstractEventLoop, spool: MessageSpool, arc_sealed: bool
    ) -> tuple[list[DkimResult], str | None]:
        def verify() -> tuple[list[DkimResult], str | None]:
            message = spool.read()
            try:
                dkims = verify_dkim(message, self.resolver.bridge(loop), self.timeout)
            except Exception as exc:  # a header block dkimpy cannot parse
                log.info("dkim verification failed", error=f"{type(exc).__name__}: {exc}")
                dkims = [DkimResult("permerror", "", "", "")]
            arc = verify_arc(message, self.resolver.bridge(loop), self.timeout) if arc_sealed else None
            return dkims, arc

        return await self._bounded(loop.run_in_executor(self._executor, verify), ([], "temperror"))

    async def _bounded(self, work: Awaitable[T], on_failure: T) -> T:
        try:
            async with asyncio.timeout(CHECK_DEADLINE):
                return await work
        except Exception as exc:
            log.warning("inbound check failed", error=f"{type(exc).__name__}: {exc}")
            return on_failure

    # -- the rest -------------------------------------------------------------------------------------------
    def _rewritten(self, spool: MessageSpool, head: bytes, old_head_length: int) -> MessageSpool:
        """A spool holding `head` and then the old one's text after its header block (rare: forged fields)."""
        fresh = MessageSpool(self.spool_dir)
        fresh.write(head)
        skip = old_head_length
        for chunk in spool.chunks(b"", 1024 * 1024):
            if skip >= len(chunk):
                skip -= len(chunk)
                continue
            fresh.write(chunk[skip:])
            skip = 0
        spool.close()
        return fresh

    def _count(
        self, spf_mail: SpfResult, spf_helo: SpfResult, dkims: list[DkimResult], arc: str | None, verdict: Any
    ) -> None:
        counted = [("spf", spf_mail.result), ("dmarc", verdict.result)]
        if spf_helo.result != "none":
            counted.append(("spf_helo", spf_helo.result))
        counted.extend(("dkim", d.result) for d in dkims)
        if not dkims:
            counted.append(("dkim", "none"))
        if arc is not None:
            counted.append(("arc", arc))
        for key in counted:
            series = self._series.get(key)
            if series is None:
                series = self._series[key] = metrics.AUTH_RESULTS.labels(*key)
            series.inc()


async def _ready(value: T) -> T:
    return value


def _resinfo(
    mail_from: str,
    sender_domain: str | None,
    spf_mail: SpfResult,
    helo_domain: str | None,
    spf_helo: SpfResult,
    dkims: list[DkimResult],
    arc: str | None,
    verdict: dmarc.Verdict,
    facts: Any,
) -> list[str]:
    """RFC 8601 §2.7 results with their properties; only values we checked or made safe go in."""
    lines = []
    if mail_from and sender_domain:
        lines.append(f"spf={spf_mail.result} smtp.mailfrom={sender_domain}")
    elif not mail_from and helo_domain:
        lines.append(f"spf={spf_mail.result} smtp.helo={helo_domain}")
    else:
        lines.append(f"spf={spf_mail.result}")
    if mail_from and helo_domain and spf_helo.result != "none":
        lines.append(f"spf={spf_helo.result} smtp.helo={helo_domain}")
    for result in dkims:
        properties = ""
        domain, selector = safe_domain(result.domain), safe_domain(result.selector)
        if domain:
            properties += f" header.d={domain}"
        if selector:
            properties += f" header.s={selector}"
        if result.b.isascii() and result.b.replace("+", "").replace("/", "").isalnum():
            properties += f' header.b="{result.b}"'
        lines.append(f"dkim={result.result}{properties}")
    if not dkims:
        lines.append("dkim=none")
    if arc is not None:
        lines.append(f"arc={arc}")
    comment = f" (p={verdict.policy} dis={verdict.disposition})" if verdict.policy else ""
    from_part = f" header.from={facts.from_domain}" if facts.from_domain else ""
    lines.append(f"dmarc={verdict.result}{comment}{from_part}")
    return lines
