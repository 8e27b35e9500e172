"""The aiosmtpd protocol object of one connection: our checks at aiosmtpd's seams, and the one writer of replies.

The path of a command: aiosmtpd's command loop (`SMTP._handle_client`) reads a line and asks `_smtp_methods` for
its verb; that table (`_CommandTable`) answers an unknown verb itself (`_refuse`) and runs a known one through
`_run_command` (our checks), which calls `smtp_<VERB>`: aiosmtpd's, or ours where it differs (DATA, HELP, VRFY).
The verb calls
the handler's `handle_<VERB>` hook (handler.py), where the mail policy is, and pushes the `Reply` it returns.
Every reply, ours or aiosmtpd's, goes through `push` to `_deliver`, which writes it, counts it, applies the error
limit and closes the session when the reply says so.
"""

from __future__ import annotations

import asyncio
import binascii
import collections
import functools
import logging
import re
import weakref
from base64 import b64decode
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from email._header_value_parser import get_addr_spec, get_angle_addr
from email.errors import HeaderParseError
from typing import Any, cast

import aiosmtpd.smtp
from aiosmtpd.smtp import MISSING, SMTP, Envelope
from aiosmtpd.smtp import log as aiosmtpd_log

from services.smtp_ingress import dsn, metrics, replies
from services.smtp_ingress.chunking import ChunkedMessage, parse_bdat
from services.smtp_ingress.data import SPOOL_FAILED, TOO_LONG, TOO_MUCH, DataDecoder, SpoolWriter
from services.smtp_ingress.policy import client_ip, has_control_characters, is_trusted
from services.smtp_ingress.replies import Reply
from shared.dsn import DSNError
from shared.limits import ConnectionLimiter, Refusal, Reservation
from shared.logging import get_logger
from shared.netaddr import Network
from shared.proxy import ProxiedPeer
from shared.spool import MEMORY_LIMIT, MessageSpool

log = get_logger(__name__)

_CLIENT_CACHE_SIZE = 4096

_STAGES = {
    "HELO": "helo",
    "EHLO": "helo",
    "STARTTLS": "starttls",
    "AUTH": "auth",
    "MAIL": "mail",
    "RCPT": "rcpt",
    "DATA": "data",
    "BDAT": "data",
}

# One read takes whatever the socket delivered, up to this; a small message and the commands pipelined after it
# usually arrive in one.
DATA_READ_SIZE = 256 * 1024
# The reply to refused data.
_REFUSALS = {
    TOO_LONG: replies.DATA_LINE_TOO_LONG,
    TOO_MUCH: replies.MESSAGE_TOO_BIG,
    SPOOL_FAILED: replies.TEMPORARY_FAILURE,
}
# Replies in the middle of an exchange, after which a draining session must not yet say goodbye.
_CONTINUATIONS = frozenset({220, 334, 354})
_CAP_REFUSALS = {
    Refusal.TOTAL: replies.TOO_MANY_CONNECTIONS,
    Refusal.PER_IP: replies.TOO_MANY_CONNECTIONS_FROM_IP,
}


_LOG_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO}
_aiosmtpd_sanitized_log = aiosmtpd.smtp.sanitized_log


def _sanitized_log(func: Callable[..., None], msg: Any, *args: Any, **kwargs: Any) -> None:
    """aiosmtpd's `sanitized_log`, skipped while its logger is off for the call's level.

    aiosmtpd's command loop logs every command line twice through it (DEBUG and INFO), and it masks AUTH
    credentials with a regex before asking the logger whether to log at all: about a microsecond per line, a few
    per cent of the ingress's CPU, with the logger off (the ingress runs it at WARNING). The check comes first here;
    when the logger is on, aiosmtpd's own function runs unchanged. Installed in aiosmtpd's module, whose command
    loop looks the name up at every call (the ingress rides that loop rather than a copy of it).
    """
    level = _LOG_LEVELS.get(getattr(func, "__name__", ""))
    if level is not None and not aiosmtpd_log.isEnabledFor(level):
        return
    _aiosmtpd_sanitized_log(func, msg, *args, **kwargs)


aiosmtpd.smtp.sanitized_log = _sanitized_log


@dataclass
class SessionRegistry:
    """State shared by every session of the process: caps, open sessions, the shutdown flag."""

    limiter: ConnectionLimiter
    trusted_networks: tuple[Network, ...]
    max_errors: int
    session_timeout: float
    spool_directory: str | None = None
    spool_memory_limit: int = MEMORY_LIMIT
    # POSTROOM_PROXY_TRUST_CLIENT_NETWORKS: a client address from a PROXY header may match trusted_networks.
    trust_proxied_clients: bool = False
    sessions: set[IngressSMTP] = field(default_factory=set)
    draining: bool = False
    empty: asyncio.Event = field(default_factory=asyncio.Event)
    _clients: dict[str, tuple[str, bool]] = field(default_factory=dict)

    def client(self, peer: object) -> tuple[str, bool]:
        """(client IP, trusted) of a socket peername, remembered per host rather than parsed at every connection."""
        host = str(peer[0]) if isinstance(peer, tuple) and peer else ""
        facts = self._clients.get(host)
        if facts is None:
            if len(self._clients) >= _CLIENT_CACHE_SIZE:
                self._clients.clear()  # bounded: many distinct clients just parse again
            ip = client_ip((host,))
            facts = self._clients[host] = (ip, is_trusted(ip, self.trusted_networks))
        return facts

    def drain(self) -> None:
        """Refuse new sessions with 421; close idle ones now, the others after their transaction."""
        self.draining = True
        for session in list(self.sessions):
            if not session.in_transaction:
                session.close_with(replies.SHUTTING_DOWN)
        if not self.sessions:
            self.empty.set()


class IngressEnvelope(Envelope):
    """aiosmtpd's envelope plus the message text as our DATA reader spooled it (instead of `original_content`)."""

    def __init__(self) -> None:
        super().__init__()
        self.spool: MessageSpool | None = None
        self.chunks: ChunkedMessage | None = None  # a message arriving in BDAT chunks (RFC 3030)
        # RFC 3461: RET and ENVID of MAIL, and (recipient, NOTIFY, ORCPT) of each RCPT that gave any.
        self.dsn_ret = ""
        self.dsn_envid = ""
        self.dsn_recipients: list[tuple[str, str, str]] = []

    def discard(self) -> None:
        """Free what a transaction that ends unfinished holds."""
        if self.chunks is not None:
            self.chunks.spool.close()
            self.chunks = None


class IngressSMTP(SMTP):
    """aiosmtpd's SMTP protocol with admission, timers, our replies and the one writer; the policy is the handler's."""

    def __init__(self, handler: Any, *, registry: SessionRegistry, listener: str, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self._smtp_verbs = frozenset(self._smtp_methods)
        self.registry = registry
        self.listener = listener
        # Label children bound once per listener (clones share them), not looked up per connection.
        self._connections_accepted = metrics.CONNECTIONS.labels(listener, "accepted")
        self._active_sessions = metrics.SESSIONS_ACTIVE.labels(listener)
        self._builtin_auth = any(impl.is_builtin for impl in self._auth_methods.values())
        # aiosmtpd's greeting (`220 <hostname> <ident>`) is the one text of its own that varies per listener.
        self._greeting = (f"220 {self.hostname} {self.__ident__}", replies.greeting(self.hostname))
        self._init_session()

    def clone(self) -> IngressSMTP:
        """A new session configured like this pristine one (which must never serve a connection itself).

        aiosmtpd's constructor introspects the session and the handler (`dir`, `inspect.getmembers`) on every
        connection, about a sixth of the ingress's CPU with a connection per message. The configuration it builds
        is read-only and shared here; what belongs to one connection is created anew.
        """
        # What copy.copy does for a plain object, without its generic reduce/reconstruct steps.
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__)
        asyncio.StreamReaderProtocol.__init__(
            new,
            asyncio.StreamReader(loop=self.loop, limit=self.line_length_limit),
            client_connected_cb=new._cb_client_connected,
            loop=self.loop,
        )
        new.session = new.envelope = new.transport = None
        new._handler_coroutine = new._timeout_handle = new._tls_protocol = new._original_transport = None
        new._tls_handshake_okay = True
        # Built-in AUTH mechanisms are methods of the session; the handler's (ours: PLAIN, LOGIN) are shared, and
        # so is the table when it holds no built-in one (aiosmtpd only reads it).
        if self._builtin_auth:
            new._auth_methods = {
                name: impl._replace(method=getattr(new, impl.method.__name__)) if impl.is_builtin else impl
                for name, impl in self._auth_methods.items()
            }
        new._init_session()
        return new

    def _init_session(self) -> None:
        """The state of one connection, on a new session or a clone."""
        # aiosmtpd keeps these limits in a class-level dict shared by all sessions; give each session its own.
        self.command_size_limits = collections.defaultdict(_command_size_limit)
        self._smtp_methods = _CommandTable(self._smtp_verbs, self)
        self.stage = "connect"
        self.command = "other"  # the verb being answered (a label of postroom_smtp_commands_total)
        self.client_ip = ""
        self.trusted = False
        self.errors = 0
        self.closing = False
        self._admitted: bool | None = None
        # The connect checks of a port 25 client (blocklists, connection rate), awaited by the MAIL hook.
        self.screening: asyncio.Task[Reply | None] | None = None
        # Set by the PROXY listener before the connection is made: the client its header revealed, and the global
        # slot the connection held while the header was read.
        self.proxied: tuple[ProxiedPeer, Reservation] | None = None
        self._session_timer: asyncio.TimerHandle | None = None
        self._deadline = 0.0  # of the command timeout (loop time)
        self._timer_armed = False
        self._log_debug = False  # aiosmtpd's logger logs at DEBUG (read once per session)

    # -- facts the handler reads ----------------------------------------------------------------------------
    @property
    def in_transaction(self) -> bool:
        envelope = self.envelope
        return envelope is not None and envelope.mail_from is not None

    @property
    def requires_auth(self) -> bool:
        """A submission listener (587, 465): sending needs AUTH, except to the postmaster."""
        return bool(self._auth_required)

    def tls_facts(self) -> tuple[str, str] | None:
        """(protocol version, cipher) when the session is encrypted (STARTTLS or implicit TLS)."""
        transport = self.transport
        ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
        if ssl_object is None:
            return None
        cipher = ssl_object.cipher()
        return str(ssl_object.version() or "TLS"), str(cipher[0] if cipher else "")

    # -- admission and teardown -----------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self._admitted is None:
            refusal = self._admit(transport)
            if refusal is not None:
                self._admitted = False
                result = "shutdown" if refusal is replies.SHUTTING_DOWN else "limit"
                metrics.CONNECTIONS.labels(self.listener, result).inc()
                self.transport = transport
                self._deliver(refusal)  # a 421: it closes the connection
                return
            self._admitted = True
            self.registry.sessions.add(self)
            self.registry.empty.clear()
            self._connections_accepted.inc()
            self._active_sessions.inc()
            self._session_timer = asyncio.get_running_loop().call_later(
                self.registry.session_timeout, self.close_with, replies.SESSION_TOO_LONG
            )
            self._log_debug = aiosmtpd_log.isEnabledFor(logging.DEBUG)
            screen = getattr(self.event_handler, "screen", None)  # IngressHandler.screen
            if screen is not None and self.listener == "smtp" and not self.trusted:
                self.screening = screen(self.client_ip)
            super().connection_made(transport)
            assert self._handler_coroutine is not None
            self._handler_coroutine.add_done_callback(self._handler_done)
            return
        super().connection_made(transport)

    def _admit(self, transport: asyncio.BaseTransport) -> Reply | None:
        """Learn who the client is and count it against the caps; None when admitted, else the 421 reply."""
        registry = self.registry
        reservation = None
        if self.proxied is None:
            self.client_ip, self.trusted = registry.client(transport.get_extra_info("peername"))
        else:
            peer, reservation = self.proxied
            self.client_ip = peer.address
            # Only the operator's opt-in lets a header's address earn relay trust; LOCAL/UNKNOWN never does.
            self.trusted = peer.trusted_in(registry.trusted_networks, registry.trust_proxied_clients)
        if registry.draining:
            return replies.SHUTTING_DOWN  # the PROXY listener gives the reservation back
        refused = registry.limiter.admit(self.client_ip, exempt=self.trusted, reservation=reservation)
        return None if refused is None else _CAP_REFUSALS[refused]

    def _handler_done(self, task: asyncio.Task[None]) -> None:
        """The command loop ended: the connection ends with it. aiosmtpd's loop closes it on most ways out, but not
        when the client's EOF cancels the task before its first step (a connect and an immediate FIN): the session
        then held its slot in the connection caps until the command timeout (5 minutes)."""
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.close()

    def connection_lost(self, error: Exception | None) -> None:
        if not self._admitted:
            self._client_connected_cb = None  # a refused connection: see _release
            return
        self._admitted = False
        if self._session_timer is not None:
            self._session_timer.cancel()
        if self.screening is not None:
            self.screening.cancel()
            self.screening = None
        self.registry.limiter.release(self.client_ip)
        self.registry.sessions.discard(self)
        if isinstance(self.envelope, IngressEnvelope):
            self.envelope.discard()  # a client gone in the middle of its BDAT chunks
        self._active_sessions.dec()
        if not self.registry.sessions:
            self.registry.empty.set()
        super().connection_lost(error)
        task = self._handler_coroutine
        if task is None or task.done():
            self._release()

    def _release(self) -> None:
        """Drop the references that make a session a reference cycle, once the connection is gone and the command
        loop has ended (whichever comes last calls this), so that refcounting frees the session at once.

        Otherwise each session (some 30-75 objects) waits for the cyclic garbage collector, whose passes over all
        of them cost more than a tenth of the ingress's CPU.
        """
        self._client_connected_cb = None  # a method of ours, kept by StreamReaderProtocol
        self._reader = self._writer = None  # type: ignore[assignment]  # the writer holds us as its protocol
        self._handler_coroutine = None  # a cancelled task's traceback holds our frames
        self._smtp_methods.clear()  # verb wrappers hold us

    def data_received(self, data: bytes) -> None:
        # RFC 5321 §4.5.3.2.6: the DATA timeout runs per TCP receive, so a large message on a slow link is not
        # cut by a timer started at the DATA command; the whole-session timer still bounds every session.
        if not self._admitted:
            return  # a refused connection is closing; whatever it sends is ignored
        self._reset_timeout()
        # What StreamReaderProtocol.data_received does, without its two calls to reach the reader.
        reader = self._reader
        if reader is not None:
            reader.feed_data(data)

    def _reset_timeout(self, duration: float | None = None) -> None:
        # aiosmtpd re-arms a timer for every command and we for every receive: a dozen timers per message. The
        # deadline moves instead; the armed timer, when it fires before the deadline, re-arms itself for the rest.
        deadline = self.loop.time() + (duration or self._timeout_duration)
        self._deadline = deadline
        handle = self._timeout_handle
        if handle is not None and self._timer_armed and not handle.cancelled() and handle.when() <= deadline:
            return
        if handle is not None:
            handle.cancel()
        self._timeout_handle = self.loop.call_at(deadline, self._timer_fired)
        self._timer_armed = True

    def _timer_fired(self) -> None:
        self._timer_armed = False
        if self.loop.time() < self._deadline:
            self._timeout_handle = self.loop.call_at(self._deadline, self._timer_fired)
            self._timer_armed = True
            return
        self._timeout_cb()

    def _timeout_cb(self) -> None:
        # RFC 5321 §4.5.3.2: say 421 before closing an idle session rather than just dropping it.
        self.close_with(replies.TIMEOUT)

    def close_with(self, reply: Reply) -> None:
        """Say a closing reply (a 421) outside any command: a timer fired, or the service is shutting down."""
        self.command = "other"
        self._deliver(reply)

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        """aiosmtpd's own, less the `typing.Protocol` class it defines on every call (a class built per MAIL and
        RCPT), with a fast path for the plain `<local@domain>` nearly every client sends (the email parser is slow
        for it), and without its exceptions: the email parser raises IndexError or AttributeError, not only
        HeaderParseError, on some malformed paths (`<`, `<a@`), which are bad syntax like any other."""
        plain = plain_path(arg)
        if plain is not None:
            addr, rest = plain
        elif not arg:
            return "", ""
        else:
            try:
                address, tail = get_angle_addr(arg) if arg.lstrip().startswith("<") else get_addr_spec(arg)
                addr, rest = str(address.addr_spec), str(tail)
            except (HeaderParseError, IndexError, AttributeError):
                return None, None
        localpart = addr.rpartition("@")[0]
        if self.local_part_limit and len(localpart) > self.local_part_limit:
            return None, None
        return addr, rest

    async def check_auth_needed(self, caller_method: str) -> bool:
        """aiosmtpd's AUTH gate, except for a transaction: RFC 5321 §4.5.1 wants mail to the postmaster accepted
        on every listener, so on submission listeners MAIL passes and the handler's RCPT hook refuses every other
        recipient with 530 until AUTH (DATA then has postmaster recipients only, or none)."""
        if caller_method in ("MAIL", "RCPT", "DATA"):
            return False
        return bool(await super().check_auth_needed(caller_method))

    # -- DATA -----------------------------------------------------------------------------------------------
    def _create_envelope(self) -> IngressEnvelope:
        return IngressEnvelope()

    async def smtp_DATA(self, arg: str) -> None:
        """aiosmtpd's DATA (its checks, replies and handler hook) reading the text in chunks into a spool.

        aiosmtpd reads DATA a line at a time into a list and joins it: two copies of the message in memory, and
        a Python loop per line. Our reader (data.py) decodes whatever each socket read delivered, and the text
        goes to a spool that moves to a temporary file once it is large.
        """
        if await self.check_helo_needed():
            return
        if await self.check_auth_needed("DATA"):
            return
        envelope = self.envelope
        assert isinstance(envelope, IngressEnvelope)
        if not envelope.rcpt_tos:
            await self.push(replies.NEED_RCPT)
            return
        if envelope.chunks is not None:
            await self.push(replies.DATA_AFTER_BDAT)  # RFC 3030 §2: not both in one transaction
            return
        if arg:
            await self.push(replies.PARAM_SYNTAX)
            return
        check = getattr(self.event_handler, "check_DATA", None)  # IngressHandler.check_DATA
        refusal = None if check is None else await check(self, self.session, envelope)
        if refusal is not None:
            await self.push(refusal)
            return
        await self.push(replies.START_DATA)
        spool = MessageSpool(self.registry.spool_directory, self.registry.spool_memory_limit)
        try:
            problem = await self._read_data(spool)
        except BaseException:
            spool.close()
            raise
        if problem is not None:
            # RFC 5321 §4.2.5: the reply comes after all the data was read.
            spool.close()
            await self.push(_REFUSALS[problem])
            self._set_post_data_state()
            return
        await self._queue(envelope, spool)

    async def _queue(self, envelope: IngressEnvelope, spool: MessageSpool) -> None:
        """The whole text is in: the handler's DATA hook publishes it (or refuses it), then the reply."""
        envelope.spool = spool  # the handler's hook owns it from here and closes it after the publish
        status = await self._call_handler_hook("DATA")
        if status is MISSING:
            spool.close()
        self._set_post_data_state()
        await self.push(replies.OK if status is MISSING else status)

    def _set_post_data_state(self) -> None:
        """aiosmtpd's reset of the transaction (after a message, RSET, HELO/EHLO), freeing an unfinished one."""
        envelope = self.envelope
        if isinstance(envelope, IngressEnvelope):
            envelope.discard()
        super()._set_post_data_state()  # type: ignore[no-untyped-call]

    # -- DSN parameters (RFC 3461) -------------------------------------------------------------------------
    async def smtp_MAIL(self, arg: str | None) -> None:
        """aiosmtpd's MAIL, given the argument without RET and ENVID, which are checked and kept here."""
        envelope = self.envelope
        assert isinstance(envelope, IngressEnvelope)
        before = envelope.mail_from
        values = await self._without_dsn(arg, dsn.MAIL_PARAMETERS, dsn.mail_request, super().smtp_MAIL)
        if values is not None and before is None and envelope.mail_from is not None:
            envelope.dsn_ret, envelope.dsn_envid = values

    async def smtp_RCPT(self, arg: str | None) -> None:
        """aiosmtpd's RCPT, given the argument without NOTIFY and ORCPT, which are checked and kept here."""
        envelope = self.envelope
        assert isinstance(envelope, IngressEnvelope)
        before = len(envelope.rcpt_tos)
        values = await self._without_dsn(arg, dsn.RCPT_PARAMETERS, dsn.rcpt_request, super().smtp_RCPT)
        if values is not None and len(envelope.rcpt_tos) > before:
            envelope.dsn_recipients.append((envelope.rcpt_tos[-1], *values))

    async def _without_dsn(
        self,
        arg: str | None,
        names: frozenset[str],
        parse: Callable[[dict[str, str]], tuple[str, str]],
        verb: Callable[[str | None], Awaitable[None]],
    ) -> tuple[str, str] | None:
        """Run aiosmtpd's `verb` on `arg` less the DSN parameters `names`; their values (`parse`d), or None when
        none were given or a reply refused them. Only after EHLO: in a HELO session aiosmtpd refuses every
        parameter."""
        if self.session is None or not self.session.extended_smtp:
            await verb(arg)
            return None
        try:
            rest, found = dsn.take(arg, names)
            values = parse(found)
        except DSNError:
            await self.push(replies.PARAM_SYNTAX)
            return None
        await verb(rest)
        return values if found else None

    # -- BDAT (RFC 3030) ------------------------------------------------------------------------------------
    async def smtp_BDAT(self, arg: str | None) -> None:
        """A chunk of a message (chunking.py decodes it as DATA's text would be), or with LAST its end.

        The chunk's octets are always read, also when the command is refused (§2: the server reads the chunk,
        then replies), so they are never taken for commands; only a BDAT whose size cannot be read leaves them to
        the command loop, as any client's own bytes. A refused chunk ends the transaction (§2: the client must
        not send more), so the chunks pipelined behind it are read and answered 503.
        """
        parsed = parse_bdat(arg)
        if parsed is None:
            await self.push(replies.BDAT_SYNTAX)
            return
        size, last = parsed
        envelope = self.envelope
        assert isinstance(envelope, IngressEnvelope)
        refusal = self._bdat_refusal(envelope)
        if refusal is not None:
            await self._read_chunk(size, None)
            await self.push(refusal)
            return
        message = envelope.chunks
        if message is None:
            spool = MessageSpool(self.registry.spool_directory, self.registry.spool_memory_limit)
            message = envelope.chunks = ChunkedMessage(self.data_size_limit, spool)
        await self._read_chunk(size, message)
        if last and message.problem is None:
            message.decoder.finish()
        problem = message.problem
        if problem is not None:
            if problem == SPOOL_FAILED:
                log.error("spooling the message failed", client=self.client_ip, error=str(message.writer.failure))
            self._set_rset_state()  # type: ignore[no-untyped-call]
            await self.push(_REFUSALS[problem])
        elif not last:
            await self.push(replies.chunk_received(size))
        else:
            envelope.chunks = None
            await self._queue(envelope, message.spool)

    def _bdat_refusal(self, envelope: IngressEnvelope) -> Reply | None:
        if not self.session or not self.session.host_name:
            return replies.NEED_HELO
        if not envelope.mail_from:
            return replies.NEED_MAIL
        if not envelope.rcpt_tos:
            return replies.NEED_RCPT
        return None

    async def _read_chunk(self, size: int, message: ChunkedMessage | None) -> None:
        """Read `size` octets, handing them to the message's decoder once it knows no problem (else dropping
        them): a refused or too big chunk is never held in memory."""
        reader = self._reader
        while size > 0:
            data = await reader.read(min(size, DATA_READ_SIZE))
            if not data:
                raise ConnectionResetError("connection closed during BDAT")
            size -= len(data)
            if message is not None and message.problem is None:
                message.decoder.feed(data)

    async def _read_data(self, spool: MessageSpool) -> str | None:
        """Read up to the end of data into `spool`; the problem that makes the message unacceptable, if any."""
        write = SpoolWriter(spool)
        decoder = DataDecoder(self.data_size_limit, write)
        reader = self._reader
        while True:
            chunk = await reader.read(DATA_READ_SIZE)
            if not chunk:
                # aiosmtpd cancels this task when the client closes; this is only a fallback.
                raise ConnectionResetError("connection closed during DATA")
            rest = decoder.feed(chunk)
            if decoder.problem is not None and spool.size:
                spool.close()  # no need to keep what will be refused
            if decoder.done:
                break
        if rest:
            # Commands pipelined after the final dot (RFC 2920) came in the same read: put them back in front of
            # what the reader still holds, for aiosmtpd's command loop. (aiosmtpd itself uses this buffer for
            # STARTTLS; StreamReader has no public way to push bytes back.)
            buffer: bytearray = reader._buffer  # type: ignore[attr-defined]
            buffer[:0] = rest
        if write.failure is not None and decoder.problem is None:
            # Still read to the end first: the rest of the message must never be taken for commands.
            log.error("spooling the message failed", client=self.client_ip, error=str(write.failure))
            return SPOOL_FAILED
        return decoder.problem

    # -- replies: the one writer ---------------------------------------------------------------------------
    async def push(self, status: Reply | str | bytes) -> None:
        """Write one reply: ours (a `Reply`: from the handler's hooks, which aiosmtpd's verbs push, or from this
        session), or a text of aiosmtpd's own, which becomes ours here (replies.AIOSMTPD_TEXTS)."""
        reply = status if isinstance(status, Reply) else self._from_aiosmtpd(status)
        if not self._deliver(reply):
            return
        # aiosmtpd's push awaits StreamWriter.drain() after every reply; drain returns at once (it does not even
        # yield) unless one of these holds; its own checks (FlowControlMixin's flags) in the same order.
        if (
            self._paused  # type: ignore[attr-defined]
            or self._connection_lost  # type: ignore[attr-defined]
            or self._writer.transport.is_closing()
            or self._reader.exception() is not None
        ):
            await self._writer.drain()

    def _from_aiosmtpd(self, status: str | bytes) -> Reply:
        text = status if isinstance(status, str) else status.decode("utf-8", "replace")
        greeting_text, greeting = self._greeting
        if text == greeting_text:
            return greeting
        reply = replies.from_aiosmtpd(text, self.command)
        if reply is None:
            # Only an aiosmtpd release the tables were not checked against gets here (test_aiosmtpd_texts).
            log.warning("aiosmtpd reply text not in replies.AIOSMTPD_TEXTS", text=text[:80])
            reply = replies.unforeseen(text)
        return reply

    def _deliver(self, reply: Reply) -> bool:
        """Write `reply`, count it, and do what follows from it; False once the session is closing.

        A reply that says so closes the session (every 421, and 221 after QUIT); so does the error limit
        (POSTROOM_SMTP_MAX_ERRORS replies of 5xx) and, during a graceful shutdown, the end of a command outside a
        transaction. Nothing is written after a closing reply.
        """
        # uvloop transports are not asyncio.WriteTransport subclasses, hence the cast.
        transport = cast(asyncio.WriteTransport | None, self.transport)
        if self.closing or transport is None or transport.is_closing():
            return False
        transport.write(reply.encode())  # the one line that writes an SMTP reply
        code = reply.code
        metrics.count_reply(self.command, code)
        if code >= 400:
            metrics.count_rejection(self.stage, code)
        if self._log_debug:
            aiosmtpd_log.debug("%r << %r", self.session.peer if self.session else None, str(reply))
        if reply.close:
            self.closing = True
            transport.close()
            return False
        if self.stage == "connect":
            self.stage = "other"  # the greeting is out; what follows answers commands
        if code >= 500:
            self.errors += 1
            if self.errors >= self.registry.max_errors:
                return self._deliver(replies.TOO_MANY_ERRORS)
        elif self.registry.draining and code not in _CONTINUATIONS and not self.in_transaction:
            return self._deliver(replies.SHUTTING_DOWN)
        return True

    # -- commands -------------------------------------------------------------------------------------------
    async def _run_command(self, name: str, method: Callable[[str | None], Awaitable[None]], arg: str | None) -> None:
        """Every known verb, through `_CommandTable`: our checks on the argument, then its `smtp_<VERB>`."""
        if self.closing:
            # The session said its last reply; pipelined commands behind it must not take effect.
            raise asyncio.CancelledError
        self.command = name
        self.stage = _STAGES.get(name, "other")
        try:
            # isprintable() is False for every character has_control_characters looks for (and a few more).
            if arg and not arg.isprintable() and has_control_characters(arg):
                await self.push(replies.CONTROL_CHARACTERS)
                return
            if name == "AUTH" and arg:
                # SASL mechanism names are matched case-insensitively by clients and servers alike.
                mechanism, space, rest = arg.partition(" ")
                arg = mechanism.upper() + space + rest
            await method(arg)
        finally:
            # Replies aiosmtpd sends before dispatching the next command answer no verb.
            self.command = "other"
            self.stage = "other"

    async def _refuse(self, reply: Reply, arg: str | None) -> None:
        """A verb we do not know, or one holding control characters."""
        if self.closing:
            raise asyncio.CancelledError
        await self.push(reply)

    async def _handle_client(self) -> None:
        """aiosmtpd's command loop; when it ends after the connection is gone, the session's cycles are cut."""
        try:
            await super()._handle_client()
        finally:
            if self.transport is None:  # connection_lost came first
                self._release()

    async def handle_exception(self, error: Exception) -> Reply:  # type: ignore[override]  # aiosmtpd pushes it
        """The handler's reply to an error a command raised; never aiosmtpd's, which quotes the error."""
        try:
            reply: Reply = await self.event_handler.handle_exception(error)
        except Exception:
            log.exception("handle_exception failed")
            return replies.TEMPORARY_FAILURE
        return reply

    async def smtp_STARTTLS(self, arg: str) -> None:
        """aiosmtpd's STARTTLS, except on a session already encrypted (by STARTTLS or on 465): RFC 3207 §4.2 has
        no second negotiation, and aiosmtpd's would wrap TLS in TLS and fail the connection."""
        if self.tls_facts() is not None:
            await self.push(replies.TLS_ALREADY_ACTIVE)
            return
        await super().smtp_STARTTLS(arg)

    async def smtp_HELP(self, arg: str | None) -> None:
        """RFC 5321 §4.1.1.8 leaves HELP's text free: a pointer to the RFC rather than aiosmtpd's list of verbs."""
        if await self.check_auth_needed("HELP"):
            return
        await self.push(replies.HELP)

    async def smtp_VRFY(self, arg: str | None) -> None:
        """aiosmtpd's VRFY, less its reply that quotes an argument it cannot parse: the hook answers every one."""
        if await self.check_auth_needed("VRFY"):
            return
        if not arg:
            await self.push(replies.PARAM_SYNTAX)
            return
        await self.push(await self._call_handler_hook("VRFY", arg))

    async def challenge(self, prompt: Reply) -> bytes | Reply:
        """RFC 4954 §4: a 334 continuation, then the client's answer base64-decoded; or the reply that ends the
        exchange (the client cancelled with `*`, or its answer is not base64). Used by our SASL mechanisms in
        place of aiosmtpd's `challenge_auth`, whose replies are texts of its own."""
        await self.push(prompt)
        answer = (await self._reader.readline()).strip()
        if answer == b"*":
            return replies.AUTH_ABORTED
        try:
            return b64decode(answer, validate=True)
        except binascii.Error:
            return replies.AUTH_BAD_BASE64


# RFC 5322 §3.2.3 atext, ASCII only: a local part of these is a dot-atom the email parser returns unchanged.
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_PLAIN_PATH = re.compile(rf"<({_ATEXT}(?:\.{_ATEXT})*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*)>")


def plain_path(arg: str) -> tuple[str, str] | None:
    """(address, rest) for `<dot-atom@labels>` exactly as aiosmtpd's parser returns it; None for anything else
    (comments, quoting, source routes, non-ASCII, a `=?` that could start an RFC 2047 word), left to the parser.

    The parser takes the whitespace after `>` (and comments, which are left to it) off the parameters.
    """
    match = _PLAIN_PATH.match(arg)
    if match is None:
        return None
    address = match[1]
    if "=?" in address:
        return None
    rest = arg[match.end() :]
    if rest[:1] in (" ", "\t"):
        rest = rest.lstrip()  # the parser's own folding-whitespace rule (str.lstrip)
    if rest[:1] == "(":
        return None
    return address, rest


def _command_size_limit() -> int:
    return SMTP.command_size_limit


class _CommandTable(dict[str, Any]):
    """aiosmtpd's verb -> method table, which its command loop asks for every command's verb.

    A known verb's method is wrapped in our checks (`_run_command`) on its first use in the session, not for all
    verbs at every connection. Any other verb is answered here (UNRECOGNISED, or CONTROL_CHARACTERS), not by
    aiosmtpd, whose reply quotes it; it counts against POSTROOM_SMTP_MAX_ERRORS like every other error.
    """

    def __init__(self, verbs: frozenset[str], session: IngressSMTP) -> None:
        super().__init__()
        self.verbs = verbs
        self._session = weakref.ref(session)  # a strong one would make every session a reference cycle

    @property
    def session(self) -> IngressSMTP:
        session = self._session()
        assert session is not None
        return session

    def get(self, key: str, default: Any = None) -> Any:
        method = super().get(key)
        if method is not None:
            return method
        session = self.session
        if key in self.verbs:
            method = self[key] = functools.partial(session._run_command, key, getattr(session, "smtp_" + key))
            return method
        reply = replies.CONTROL_CHARACTERS if has_control_characters(key) else replies.UNRECOGNISED
        return functools.partial(session._refuse, reply)
