"""aiosmtpd handler hooks: the mail policy of the ingress (who may send what to whom) and queueing at DATA."""

from __future__ import annotations

import asyncio
from typing import Any

from aiosmtpd.smtp import AuthResult, TLSSetupException

from services.smtp_ingress import metrics, replies
from services.smtp_ingress.auth import Authenticator
from services.smtp_ingress.checks import Checks
from services.smtp_ingress.config import IngressSettings
from services.smtp_ingress.inbound import InboundChecks
from services.smtp_ingress.message import ReceivedFacts, received_header, submission_headers
from services.smtp_ingress.policy import (
    NULL_SENDER,
    check_address,
    has_control_characters,
    split_domain,
    valid_helo,
)
from services.smtp_ingress.postmaster import is_bare_postmaster, postmaster_address
from services.smtp_ingress.publisher import IngressPublisher
from services.smtp_ingress.replies import Reply
from services.store import Store
from services.store.keys import normalize_address
from services.store.outage import outage
from shared.envelope import Envelope
from shared.errors import TemporaryError
from shared.logging import get_logger
from shared.queue_id import new_queue_id
from shared.spool import MessageSpool
from shared.srs import Srs

log = get_logger(__name__)

# Where Message-ID and Date are looked for in a submitted message: its header block, which is never this long in
# practice; a message whose header block is longer may get a second Message-ID or Date added.
HEADER_SCAN_LIMIT = 256 * 1024

# EHLO keywords we add to aiosmtpd's list (RFC 2920, RFC 2034, RFC 3030, RFC 3461); HELP is dropped.
_EXTRA_EXTENSIONS = ("PIPELINING", "ENHANCEDSTATUSCODES", "CHUNKING", "DSN")
# EHLO replies made, by aiosmtpd's lines: they differ only by listener and TLS state.
_EHLO_CACHE_SIZE = 64


class IngressHandler:
    """Hooks called by `IngressSMTP`; each returns a `Reply` (constants from `replies`) for the session to push."""

    def __init__(
        self,
        settings: IngressSettings,
        store: Store,
        publisher: IngressPublisher,
        authenticator: Authenticator,
        inbound: InboundChecks | None = None,
        checks: Checks | None = None,
    ) -> None:
        self.settings = settings
        self.inbound = inbound
        self.srs = Srs.of(settings)
        self.checks = checks  # limits, blocklists, content filter (checks.py)
        self.store = store
        self.publisher = publisher
        self.authenticator = authenticator
        self.inflight: set[asyncio.Task[None]] = set()
        self._accepted_total: dict[str, Any] = {}  # postroom_smtp_messages_accepted_total by listener
        self._helo = replies.helo(settings.hostname)
        self._ehlo: dict[tuple[str, ...], Reply] = {}

    # -- greeting ---------------------------------------------------------------------------------------------
    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[Reply]:
        """aiosmtpd hands over the lines it would send (its name, then its keywords for this session's state) and
        pushes each item of the list returned: here, our one multi-line reply."""
        if has_control_characters(hostname) or len(hostname) > 255:
            return [replies.HELO_BAD_NAME]
        session.host_name = hostname
        key = tuple(responses)
        reply = self._ehlo.get(key)
        if reply is None:
            keywords = [line[4:] for line in responses[1:] if line[4:] != "HELP"]
            keywords[1:1] = _EXTRA_EXTENSIONS
            reply = replies.ehlo(responses[0][4:], keywords)
            if len(self._ehlo) < _EHLO_CACHE_SIZE:
                self._ehlo[key] = reply
        return [reply]

    async def handle_HELO(self, server: Any, session: Any, envelope: Any, hostname: str) -> Reply:
        if has_control_characters(hostname) or len(hostname) > 255:
            return replies.HELO_BAD_NAME
        session.host_name = hostname
        return self._helo

    # -- envelope ---------------------------------------------------------------------------------------------
    async def handle_MAIL(self, server: Any, session: Any, envelope: Any, address: str, options: list[str]) -> Reply:
        screening = getattr(server, "screening", None)
        if screening is not None and not session.authenticated:
            refusal: (
                Reply | None
            ) = await screening  # the connect checks (blocklists, connection rate): checks.Checks.screen
            if refusal is not None:
                return refusal
        problem = check_address(address, sender=True, smtputf8="SMTPUTF8" in options)
        if problem:
            return problem
        if session.authenticated and not await self._owns(str(session.auth_data), address):
            log.info("sender not owned", client=server.client_ip, user=session.auth_data)
            return replies.SENDER_NOT_OWNED
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return replies.SENDER_OK

    async def _owns(self, user: str, address: str) -> bool:
        """RFC 6409 §6.1: an authenticated user sends as itself or as an alias that points to it."""
        if address == NULL_SENDER:
            return False
        candidate = normalize_address(address)
        if candidate == user:
            return True
        targets = await self.store.accounts.alias_targets(candidate)
        return targets is not None and user in (normalize_address(t) for t in targets)

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: list[str]) -> Reply:
        if len(envelope.rcpt_tos) >= self.settings.max_recipients:
            return replies.TOO_MANY_RECIPIENTS
        if is_bare_postmaster(address):
            return await self._postmaster(server, envelope, options)
        if server.requires_auth and not session.authenticated:
            # Submission listeners: only mail to the postmaster goes without AUTH (IngressSMTP.check_auth_needed).
            return replies.AUTH_REQUIRED
        problem = check_address(address, sender=False, smtputf8=bool(envelope.smtp_utf8))
        if problem:
            return problem
        # One round trip: the domain, user, alias and catch-all facts come from one pipeline.
        facts = await self.store.accounts.lookup(address)
        local = facts.local_domain
        if address.endswith("."):
            # The relay decision ignores a trailing dot of the domain (split_domain); lookup() reads it as written.
            local = await self.store.accounts.is_local_domain(split_domain(address))
        if local:
            # A bounce to the SRS sender of a copy we forwarded: the delivery routes it to the original sender.
            if not facts.deliverable and not (self.srs is not None and self.srs.reverse(address) is not None):
                return replies.NO_SUCH_USER
        elif not (session.authenticated or server.trusted):
            log.info("relay denied", client=server.client_ip, domain=split_domain(address))
            return replies.RELAY_DENIED
        _add_recipient(envelope, address, options)
        return replies.RECIPIENT_OK

    async def _postmaster(self, server: Any, envelope: Any, options: list[str]) -> Reply:
        """RFC 5321 §4.1.1.3: `<Postmaster>` is postmaster@ the primary domain, for anyone, on every listener."""
        address, why = await self.postmaster()
        if address is None:
            log.warning("postmaster not deliverable", client=server.client_ip, reason=why)
            return replies.NO_SUCH_USER
        _add_recipient(envelope, address, options)
        return replies.RECIPIENT_OK

    async def postmaster(self) -> tuple[str | None, str]:
        """Where `<Postmaster>` goes now (None: nowhere) and a line saying so."""
        settings = self.settings
        return await postmaster_address(settings.primary_domain, settings.hostname, self.store.accounts)

    # -- message ----------------------------------------------------------------------------------------------
    def screen(self, client_ip: str) -> asyncio.Task[Reply | None] | None:
        """The connect checks of an untrusted port 25 client, started at connect (IngressSMTP.connection_made)."""
        return None if self.checks is None else self.checks.screen(client_ip)

    async def check_DATA(self, server: Any, session: Any, envelope: Any) -> Reply | None:
        """Before the 354 (IngressSMTP.smtp_DATA): an authenticated account's send limit."""
        if self.checks is None or not session.authenticated:
            return None
        return await self.checks.before_data(str(session.auth_data), len(envelope.rcpt_tos))

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> Reply:
        queue_id = new_queue_id()
        spool = _take_spool(envelope)
        checked = b""
        if self.inbound is not None and self.inbound.applies(server, session):
            refusal, checked, spool = await self._check_inbound(server, session, envelope, spool, queue_id)
            if refusal is not None:
                return refusal
        checks = self.checks
        if checks is not None and checks.filters(server.listener):
            try:
                refusal, spool = await checks.content(server, session, envelope, spool, queue_id)
            except BaseException:  # the client left while the filter looked (the hook is cancelled)
                spool.close()
                raise
            if refusal is not None:
                spool.close()
                return refusal
        try:
            prefix, queued, facts = self._prepare(server, session, envelope, spool, queue_id)
            prefix = checked + prefix
        except Exception:
            spool.close()
            log.exception("preparing message failed", queue_id=queue_id)
            return replies.TEMPORARY_FAILURE
        # Shielded: a client that disconnects at the final dot must not leave a half-published message.
        task = asyncio.create_task(self._queue(prefix, spool, queued, facts, server.listener))
        self.inflight.add(task)
        task.add_done_callback(self._finished)
        try:
            await asyncio.shield(task)
        except TemporaryError as exc:
            log.warning("message not queued", queue_id=queue_id, reason=exc.reason)
            return replies.TEMPORARY_FAILURE
        except Exception:
            log.exception("queueing failed", queue_id=queue_id)
            return replies.TEMPORARY_FAILURE
        return replies.queued(queue_id)

    async def _check_inbound(
        self, server: Any, session: Any, envelope: Any, spool: MessageSpool, queue_id: str
    ) -> tuple[Reply | None, bytes, MessageSpool]:
        """SPF/DKIM/DMARC/ARC (inbound/): a refusal, or the Authentication-Results: to prepend and the spool."""
        assert self.inbound is not None
        mail_from = "" if envelope.mail_from == NULL_SENDER else str(envelope.mail_from)
        try:
            outcome = await self.inbound.check(server.client_ip, session.host_name, mail_from, spool)
        except Exception:  # the mail flows unchecked rather than fail on our fault
            log.exception("inbound checks failed", queue_id=queue_id)
            return None, b"", spool
        if outcome.reply is not None:
            outcome.spool.close()
            log.info("refused by dmarc", queue_id=queue_id, client=server.client_ip)
        return outcome.reply, outcome.headers, outcome.spool

    def _finished(self, task: asyncio.Task[None]) -> None:
        self.inflight.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved here so a publish whose client left is not reported as unhandled

    def _prepare(
        self, server: Any, session: Any, envelope: Any, spool: MessageSpool, queue_id: str
    ) -> tuple[bytes, Envelope, ReceivedFacts]:
        """The headers we put in front of the spooled text (Received:, and Message-ID/Date on submission), the
        queued envelope, and the facts of the Received: header (the trace's `accepted` event states them too)."""
        tls = server.tls_facts()
        auth_user = str(session.auth_data) if session.authenticated else None
        helo = session.host_name if session.host_name and valid_helo(session.host_name) else None
        recipients = tuple(envelope.rcpt_tos)
        facts = ReceivedFacts(
            hostname=self.settings.hostname,
            queue_id=queue_id,
            client_ip=server.client_ip,
            helo=helo,
            esmtp=bool(session.extended_smtp),
            tls_version=tls[0] if tls else None,
            tls_cipher=tls[1] if tls else None,
            # Who sent it is nobody else's business unless the operator says so (the trace keeps it regardless).
            auth_user=auth_user if self.settings.smtp_received_auth else None,
            recipient=recipients[0] if len(recipients) == 1 else None,
            authenticated=auth_user is not None,
        )
        extra = b""
        if auth_user:
            extra = submission_headers(spool.head(HEADER_SCAN_LIMIT), queue_id, self.settings.hostname)
        mail_from = "" if envelope.mail_from == NULL_SENDER else str(envelope.mail_from)
        queued = Envelope(
            queue_id=queue_id,
            mail_from=mail_from,
            recipients=recipients,
            client_address=server.client_ip,
            auth_user=auth_user or "",
            esmtp=tuple(envelope.mail_options),
            dsn_ret=envelope.dsn_ret,
            dsn_envid=envelope.dsn_envid,
            dsn_recipients=tuple(envelope.dsn_recipients),
        )
        return received_header(facts) + extra, queued, facts

    async def _queue(
        self, prefix: bytes, spool: MessageSpool, envelope: Envelope, facts: ReceivedFacts, listener: str
    ) -> None:
        size = len(prefix) + spool.size
        try:
            if spool.in_memory:
                body = prefix + spool.getvalue()
                spool.close()  # the body is now the one copy held during the publish
                await self.publisher.publish(body, envelope)
            else:
                await self.publisher.publish_spooled(prefix, spool, envelope)
        finally:
            spool.close()
        accepted_total = self._accepted_total.get(listener)
        if accepted_total is None:
            accepted_total = self._accepted_total[listener] = metrics.MESSAGES_ACCEPTED.labels(listener)
        accepted_total.inc()
        metrics.MESSAGE_SIZE.observe(size)
        log.info(
            "queued",
            queue_id=envelope.queue_id,
            client=envelope.client_address,
            size=size,
            recipients=len(envelope.recipients),
        )
        accepted = {
            "client": envelope.client_address,
            "helo": facts.helo,
            "tls": facts.tls_version,
            "auth": envelope.auth_user or None,
            "size": size,
            "recipients": list(envelope.recipients),
        }
        # The trace is written after the reply's fate is sealed and never delays or fails it: posted to the store's
        # trace writer, which shares one Redis round trip among the sessions of the moment and counts rather than
        # raises what it cannot write (Store.close() flushes it at shutdown). No Redis command is awaited between
        # the end of DATA and the reply.
        try:
            self.store.trace.post(envelope.queue_id, "smtp", [("accepted", accepted), ("queued", {})])
        except Exception:
            log.exception("trace post failed", queue_id=envelope.queue_id)

    # -- AUTH (aiosmtpd finds methods named auth_<MECHANISM> on the handler) ------------------------------------
    async def auth_PLAIN(self, server: Any, args: list[str]) -> AuthResult:
        return await self.authenticator.plain(server, server.client_ip, args)

    async def auth_LOGIN(self, server: Any, args: list[str]) -> AuthResult:
        return await self.authenticator.login(server, server.client_ip, args)

    # -- small commands ---------------------------------------------------------------------------------------
    async def handle_NOOP(self, server: Any, session: Any, envelope: Any, arg: str | None) -> Reply:
        return replies.OK

    async def handle_RSET(self, server: Any, session: Any, envelope: Any) -> Reply:
        return replies.OK

    async def handle_QUIT(self, server: Any, session: Any, envelope: Any) -> Reply:
        return replies.BYE  # a closing reply: the session ends once it is written

    async def handle_VRFY(self, server: Any, session: Any, envelope: Any, argument: str) -> Reply:
        # Never confirm or deny a mailbox (RFC 5321 §3.5.3 allows 252); VRFY must not become a user directory.
        return replies.VRFY_CANNOT

    async def handle_exception(self, error: Exception) -> Reply:
        if isinstance(error, TLSSetupException):
            # A client that fails the STARTTLS handshake is common on the Internet, not a fault of ours.
            cause = error.__cause__
            log.info("tls handshake failed", error=f"{type(cause).__name__}: {cause}")
            return replies.TEMPORARY_FAILURE
        reason = outage(error)
        if reason is not None:
            # Redis down or refusing is an operational state, not a bug: one line and a counter, no traceback.
            log.warning("store unavailable", reason=reason, error=f"{type(error).__name__}: {error}")
            metrics.STORE_ERRORS.labels(reason).inc()
            return replies.LOOKUP_FAILURE
        log.error("session error", error=f"{type(error).__name__}: {error}", exc_info=error)
        return replies.TEMPORARY_FAILURE


def _add_recipient(envelope: Any, address: str, options: list[str]) -> None:
    """Add a recipient once (however its address is cased)."""
    if normalize_address(address) not in (normalize_address(r) for r in envelope.rcpt_tos):
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)


def _take_spool(envelope: Any) -> MessageSpool:
    """The text our DATA reader (IngressSMTP.smtp_DATA) spooled; the hook owns it from here."""
    spool: MessageSpool = envelope.spool
    envelope.spool = None
    return spool
