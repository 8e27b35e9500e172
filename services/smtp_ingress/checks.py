"""The ingress's abuse checks at their three moments: connect, the DATA command and the end of DATA.

Connect: DNSBL and connection rate; DATA: send limits; end of DATA: the content filter. Each returns the refusal to
answer, or None to go on.
"""

from __future__ import annotations

import asyncio
from typing import Any

from services.smtp_ingress import metrics, replies, rewrite
from services.smtp_ingress.config import IngressSettings
from services.smtp_ingress.dnsbl import Blocklists
from services.smtp_ingress.limits import Limits
from services.smtp_ingress.policy import NULL_SENDER, valid_helo
from services.smtp_ingress.replies import Reply
from services.smtp_ingress.rspamd import Envelope, FilterUnavailable, Rspamd
from services.store.ratelimit import RateLimiter
from shared.logging import get_logger
from shared.resolver import make_resolver
from shared.spool import MessageSpool

log = get_logger(__name__)

# rspamd's actions and our reply to each; the others let the message through (changed as rspamd says).
_REFUSALS = {
    "reject": replies.FILTER_REJECT,
    "soft reject": replies.FILTER_TEMPFAIL,
    "greylist": replies.FILTER_TEMPFAIL,
}
# rspamd's milter proxy marks a message so when the action says to and no header of its own is configured.
SPAM_HEADER = ("X-Spam", "Yes")


class Checks:
    """What the settings turn on; the handler calls `screen`, `before_data` and `content`."""

    def __init__(self, settings: IngressSettings, limiter: RateLimiter) -> None:
        self.settings = settings
        self.limits = Limits(limiter, settings.send_limit, settings.mx_connection_rate)
        self.blocklists: Blocklists | None = None
        if settings.dnsbl_zones:
            resolver = make_resolver(settings.dns_nameservers, settings.dnsbl_timeout)
            self.blocklists = Blocklists(settings.dnsbl_zones, resolver)
        self.rspamd = Rspamd(settings.rspamd_url, settings.rspamd_timeout) if settings.rspamd_url else None
        self.screens = self.blocklists is not None or settings.mx_connection_rate is not None

    # -- connect (port 25, untrusted clients) ---------------------------------------------------------------------
    def screen(self, client_ip: str) -> asyncio.Task[Reply | None] | None:
        """Start the connect-time checks of a port 25 client; the session awaits them at MAIL (`screened`), so the
        greeting is not held up by a blocklist's answer."""
        if not self.screens:
            return None
        return asyncio.create_task(self._screen(client_ip))

    async def _screen(self, client_ip: str) -> Reply | None:
        try:
            if self.blocklists is None:
                rate, listing = await self.limits.check_connection(client_ip), None
            elif self.limits.mx_connection_rate is None:
                rate, listing = None, await self._listing(client_ip)
            else:
                rate, listing = await asyncio.gather(self.limits.check_connection(client_ip), self._listing(client_ip))
        except Exception:
            log.exception("connect checks failed", client=client_ip)
            return None
        if listing is not None:
            return replies.dnsbl_listed(client_ip, listing)
        return rate

    async def _listing(self, client_ip: str) -> str | None:
        if self.blocklists is None:
            return None
        found = await self.blocklists.listing(client_ip)
        return None if found is None else found.zone

    # -- the DATA command -----------------------------------------------------------------------------------------
    async def before_data(self, account: str, recipients: int) -> Reply | None:
        """An authenticated account's send limit, charged once the recipients are known and before the text is
        sent, so a refused message costs the client no upload."""
        return await self.limits.check_send(account, recipients)

    # -- the end of DATA ------------------------------------------------------------------------------------------
    def filters(self, listener: str) -> bool:
        if self.rspamd is None:
            return False
        # Port 25 always (what comes from the Internet), submission only when the operator asks for it.
        return listener == "smtp" or self.settings.rspamd_submission

    async def content(
        self, server: Any, session: Any, envelope: Any, spool: MessageSpool, queue_id: str
    ) -> tuple[Reply | None, MessageSpool]:
        """rspamd's verdict on the message: the refusal, or None and the message as rspamd wants it changed."""
        assert self.rspamd is not None
        user = str(session.auth_data) if session.authenticated else None
        helo = session.host_name if session.host_name and valid_helo(session.host_name) else None
        facts = Envelope(
            queue_id=queue_id,
            mail_from="" if envelope.mail_from == NULL_SENDER else str(envelope.mail_from),
            recipients=tuple(envelope.rcpt_tos),
            client_ip=server.client_ip,
            helo=helo,
            user=user,
        )
        try:
            verdict = await self.rspamd.check(spool, facts)
        except FilterUnavailable as exc:
            metrics.FILTER_ACTIONS.labels("error").inc()
            accept = self.settings.rspamd_failure == "accept"
            log.warning("content filter unavailable", queue_id=queue_id, error=str(exc), accepted=accept)
            return (None if accept else replies.FILTER_UNAVAILABLE), spool
        label = verdict.action.replace(" ", "_")
        metrics.FILTER_ACTIONS.labels(label if label in metrics.FILTER_ACTIONS_SEEN else "other").inc()
        log.info("content filter", queue_id=queue_id, action=verdict.action, score=verdict.score)
        refusal = _REFUSALS.get(verdict.action)
        if refusal is not None:
            return refusal, spool
        add = list(verdict.add_headers)
        if verdict.action == "add header" and not add:
            add.append(SPAM_HEADER)
        subject = verdict.subject if verdict.action == "rewrite subject" else None
        try:
            changed = rewrite.apply(spool, add, verdict.remove_headers, subject, self.settings.smtp_spool_dir)
        except OSError:
            log.exception("applying the filter's header changes failed", queue_id=queue_id)
            return replies.TEMPORARY_FAILURE, spool
        return None, changed

    async def close(self) -> None:
        if self.rspamd is not None:
            await self.rspamd.close()
