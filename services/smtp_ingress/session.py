"""The aiosmtpd protocol object of one connection, extended only where aiosmtpd has no hook for it."""

from __future__ import annotations

import asyncio
import collections
import logging
import re
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from email._header_value_parser import get_addr_spec, get_angle_addr
from email.errors import HeaderParseError
from typing import Any, cast

from aiosmtpd.smtp import (
    ALLOWED_BEFORE_STARTTLS,
    BOGUS_LIMIT,
    MISSING,
    SMTP,
    Envelope,
    TLSSetupException,
    sanitized_log,
    syntax,
)
from aiosmtpd.smtp import log as aiosmtpd_log

from services.smtp_ingress import metrics, replies
from services.smtp_ingress.data import TOO_LONG, TOO_MUCH, DataDecoder
from services.smtp_ingress.policy import client_ip, has_control_characters, is_trusted
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
}

# One read takes whatever the socket delivered, up to this; a small message and the commands pipelined after it
# usually arrive in one.
DATA_READ_SIZE = 256 * 1024
SPOOL_FAILED = "spool failed"
# The reply to refused data: aiosmtpd's texts (`push` translates them as it does aiosmtpd's own), or ours.
_REFUSALS = {
    TOO_LONG: "500 Line too long (see RFC5321 4.5.3.1.6)",
    TOO_MUCH: "552 Error: Too much mail data",
    SPOOL_FAILED: replies.TEMPORARY_FAILURE,
}
_CAP_REFUSALS = {
    Refusal.TOTAL: replies.TOO_MANY_CONNECTIONS,
    Refusal.PER_IP: replies.TOO_MANY_CONNECTIONS_FROM_IP,
}


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


# Extensions: admission against the connection caps, a whole-session timer, a 421 before an idle-timeout
# close, and one `push` through which every reply passes; it rewrites aiosmtpd's own texts into our
# constants, counts rejections, closes the session after too many errors, and says goodbye during a graceful
# shutdown. All mail policy stays in the handler's hooks.
class IngressEnvelope(Envelope):
    """aiosmtpd's envelope plus the message text as our DATA reader spooled it (instead of `original_content`)."""

    def __init__(self) -> None:
        super().__init__()
        self.spool: MessageSpool | None = None


class IngressSMTP(SMTP):
    """aiosmtpd's SMTP protocol with admission, error limits and reply translation."""

    def __init__(self, handler: Any, *, registry: SessionRegistry, listener: str, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self._smtp_verbs = frozenset(self._smtp_methods)
        self.registry = registry
        self.listener = listener
        # Label children bound once per listener (clones share them), not looked up per connection.
        self._connections_accepted = metrics.CONNECTIONS.labels(listener, "accepted")
        self._active_sessions = metrics.ACTIVE_SESSIONS.labels(listener)
        self._builtin_auth = any(impl.is_builtin for impl in self._auth_methods.values())
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
        self.client_ip = ""
        self.trusted = False
        self.errors = 0
        self.closing = False
        self._admitted: bool | None = None
        # Set by the PROXY listener before the connection is made: the client its header revealed, and the global
        # slot the connection held while the header was read.
        self.proxied: tuple[ProxiedPeer, Reservation] | None = None
        self._session_timer: asyncio.TimerHandle | None = None
        self._deadline = 0.0  # of the command timeout (loop time)
        self._timer_armed = False
        self._quit = False  # QUIT answered: the command loop ends the session
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
                result = "shutdown" if refusal == replies.SHUTTING_DOWN else "limit"
                metrics.CONNECTIONS.labels(self.listener, result).inc()
                metrics.REJECTIONS.labels("connect", "421").inc()
                # uvloop transports are not asyncio.WriteTransport subclasses, hence the cast.
                cast(asyncio.WriteTransport, transport).write(refusal.encode() + b"\r\n")
                transport.close()
                return
            self._admitted = True
            self.registry.sessions.add(self)
            self.registry.empty.clear()
            self._connections_accepted.inc()
            self._active_sessions.inc()
            self._session_timer = asyncio.get_running_loop().call_later(
                self.registry.session_timeout, self.close_with, replies.SESSION_TOO_LONG
            )
        super().connection_made(transport)

    def _admit(self, transport: asyncio.BaseTransport) -> str | None:
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

    def connection_lost(self, error: Exception | None) -> None:
        if not self._admitted:
            self._client_connected_cb = None  # a refused connection: see _release
            return
        self._admitted = False
        if self._session_timer is not None:
            self._session_timer.cancel()
        self.registry.limiter.release(self.client_ip)
        self.registry.sessions.discard(self)
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

        Otherwise each session (~30 objects, ~75 before the command loop was our own) waits for the cyclic
        garbage collector, whose passes over all of it cost more than a tenth of the ingress's CPU.
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

    def close_with(self, reply: str) -> None:
        """Send a final 421 and close; nothing else is said or processed on this session afterwards."""
        if self.closing:
            return
        self.closing = True
        metrics.REJECTIONS.labels(self.stage, reply[:3]).inc()
        transport = cast(asyncio.WriteTransport | None, self.transport)
        if transport is not None and not transport.is_closing():
            transport.write(reply.encode() + b"\r\n")
            transport.close()

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        """aiosmtpd's own, less the `typing.Protocol` class it defines on every call (~3% of the CPU), and with a
        fast path for the plain `<local@domain>` nearly every client sends (the email parser was ~5%)."""
        plain = plain_path(arg)
        if plain is not None:
            addr, rest = plain
        elif not arg:
            return "", ""
        else:
            try:
                address, tail = get_angle_addr(arg) if arg.lstrip().startswith("<") else get_addr_spec(arg)
            except HeaderParseError:
                return None, None
            addr, rest = str(address.addr_spec), str(tail)
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
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        spool = MessageSpool(self.registry.spool_directory, self.registry.spool_memory_limit)
        try:
            problem = await self._read_data(spool)
        except BaseException:
            spool.close()
            raise
        if problem is not None:
            # RFC 5321 §4.2.5: the reply comes after all the data was read (aiosmtpd's texts, translated by push).
            spool.close()
            await self.push(_REFUSALS[problem])
            self._set_post_data_state()  # type: ignore[no-untyped-call]
            return
        envelope.spool = spool  # the handler's hook owns it from here and closes it after the publish
        status = await self._call_handler_hook("DATA")
        if status is MISSING:
            spool.close()
        self._set_post_data_state()  # type: ignore[no-untyped-call]
        await self.push("250 OK" if status is MISSING else status)

    async def _read_data(self, spool: MessageSpool) -> str | None:
        """Read up to the end of data into `spool`; the problem that makes the message unacceptable, if any."""
        failure: list[OSError] = []

        def write(text: bytes) -> None:
            if failure:
                return
            try:
                spool.write(text)
            except OSError as exc:  # e.g. the spool directory is full
                failure.append(exc)
                spool.close()

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
        if failure and decoder.problem is None:
            # Still read to the end first: the rest of the message must never be taken for commands.
            log.error("spooling the message failed", client=self.client_ip, error=str(failure[0]))
            return SPOOL_FAILED
        return decoder.problem

    # -- replies --------------------------------------------------------------------------------------------
    async def push(self, status: str | bytes) -> None:
        if self.closing:
            return
        wire = _WIRE.get(status) if isinstance(status, str) else None
        if wire is None:
            text = status if isinstance(status, str) else status.decode("utf-8", "replace")
            text = replies.translate(text, self.stage)
            code = replies.code_of(text)
            data = None
        else:
            text, data, code = wire
        if code == 421:
            self.close_with(text)
            return
        if code >= 400:
            metrics.REJECTIONS.labels(self.stage, str(code)).inc()
        # aiosmtpd's SMTP.push, without its coroutine call and drain when nothing can block.
        if data is None:
            data = bytes(text, "utf-8" if self.enable_SMTPUTF8 else "ascii") + b"\r\n"
        writer = self._writer
        writer.write(data)
        if self._log_debug:
            aiosmtpd_log.debug("%r << %r", self.session.peer if self.session else None, data[:-2])
        # StreamWriter.drain() returns at once (it does not even yield) unless one of these holds; its own checks
        # (FlowControlMixin's flags) in the same order decide what happens then.
        if (
            self._paused  # type: ignore[attr-defined]
            or self._connection_lost  # type: ignore[attr-defined]
            or writer.transport.is_closing()
            or self._reader.exception() is not None
        ):
            await writer.drain()
        if self.stage == "connect":
            self.stage = "other"  # the greeting is out; what follows answers commands
        if code >= 500:
            self.errors += 1
            if self.errors >= self.registry.max_errors:
                self.close_with(replies.TOO_MANY_ERRORS)
        elif (
            self.registry.draining
            and not self.in_transaction
            and code not in (220, 334, 354)
            and text[3:4] != "-"  # not in the middle of a multi-line reply
        ):
            self.close_with(replies.SHUTTING_DOWN)

    def _guard(self, name: str, method: Callable[[str | None], Awaitable[None]]) -> Callable[..., Awaitable[None]]:
        """A verb's method wrapped in our checks, for callers of `_smtp_methods` (the command loop inlines them)."""

        async def run(arg: str | None) -> None:
            await self._run_command(name, method, arg)

        return run

    async def _run_command(self, name: str, method: Callable[[str | None], Awaitable[None]], arg: str | None) -> None:
        if self.closing:
            # The session said its 421; pipelined commands behind it must not take effect.
            raise asyncio.CancelledError
        self.stage = _STAGES.get(name, "other")
        # isprintable() is False for every character has_control_characters looks for (and a few more).
        if arg and not arg.isprintable() and has_control_characters(arg):
            await self.push(replies.CONTROL_CHARACTERS)
            return
        if name == "AUTH" and arg:
            # SASL mechanism names are matched case-insensitively by clients and servers alike.
            mechanism, space, rest = arg.partition(" ")
            arg = mechanism.upper() + space + rest
        try:
            await method(arg)
        finally:
            # Replies aiosmtpd sends before dispatching the next command belong to no command stage.
            self.stage = "other"

    @syntax("QUIT")
    async def smtp_QUIT(self, arg: str) -> None:
        """aiosmtpd's QUIT, except that it lets `_handle_client` end the session rather than cancel its task."""
        if arg:
            await self.push("501 Syntax: QUIT")
        else:
            status = await self._call_handler_hook("QUIT")
            await self.push("221 Bye" if status is MISSING else status)
            self._quit = True  # aiosmtpd cancels its task here
            assert self.transport is not None
            self.transport.close()

    async def _handle_client(self) -> None:
        """aiosmtpd 1.4.6's command loop: the same checks in the same order with the same replies, plus ours.

        Differences, none visible to a client: our per-command checks (`_run_command`) are called directly
        instead of through a wrapper per verb; aiosmtpd's log calls are skipped when its logger would drop them;
        and after QUIT the session ends where aiosmtpd's self-cancellation would have ended it (at the wait for
        the next line) without raising CancelledError through the task, unless the client already sent more.
        aiosmtpd's PROXY header wait is left out: a proxied connection's header is read before its session exists
        (shared/proxy.py), so that it can come before a TLS handshake and be checked against the balancer's networks.
        """
        try:
            session = self.session
            assert session is not None
            log_info = aiosmtpd_log.isEnabledFor(logging.INFO)
            log_debug = self._log_debug = aiosmtpd_log.isEnabledFor(logging.DEBUG)
            if log_info:
                aiosmtpd_log.info("%r handling connection", session.peer)

            await self.push(f"220 {self.hostname} {self.__ident__}")
            call_limit: collections.defaultdict[str, int] | dict[str, int]
            if self._enforce_call_limit:
                call_limit = collections.defaultdict(lambda: self._call_limit_default, self._call_limit_base)
            else:
                call_limit = {}
            bogus_budget = BOGUS_LIMIT
            reader = self._reader
            while self.transport is not None:  # pragma: nobranch
                try:
                    if self._quit:
                        if reader._buffer or reader.at_eof() or reader.exception() is not None:  # type: ignore[attr-defined]
                            # More came behind QUIT: aiosmtpd's own way, a cancel that lands at the next wait.
                            self._quit = False
                            assert self._handler_coroutine is not None
                            self._handler_coroutine.cancel()
                        else:
                            # The next read would wait, where aiosmtpd's cancel lands: end as its handler does.
                            if log_info:
                                aiosmtpd_log.info("%r Connection lost during _handle_client()", session.peer)
                            self._writer.close()
                            return
                    try:
                        line: bytes = await reader.readuntil()
                    except asyncio.LimitOverrunError as error:
                        # Line too long. Read until end of line before sending 500.
                        await reader.read(error.consumed)
                        while True:
                            try:
                                await reader.readuntil()
                                break
                            except asyncio.LimitOverrunError as e:
                                # Line is even longer...
                                await reader.read(e.consumed)
                                continue
                        # Now that we have read a full line from the client,
                        # send error response and read the next command line.
                        await self.push("500 Command line too long")
                        continue
                    if log_debug:
                        sanitized_log(aiosmtpd_log.debug, "_handle_client readline: %r", line)
                    line = line.rstrip(b"\r\n")
                    if log_info:
                        sanitized_log(aiosmtpd_log.info, "%r >> %r", session.peer, line)
                    if not line:
                        await self.push("500 Error: bad syntax")
                        continue
                    command_bytes, _, arg_bytes = line.partition(b" ")
                    try:
                        command = command_bytes.upper().decode(encoding="ascii")
                    except UnicodeDecodeError:
                        await self.push("500 Error: bad syntax")
                        continue
                    arg: str | None
                    if not arg_bytes:
                        arg = None
                    else:
                        arg_bytes = arg_bytes.strip()
                        if self.enable_SMTPUTF8:
                            arg = str(arg_bytes, encoding="utf-8", errors="surrogateescape")
                        else:
                            try:
                                arg = str(arg_bytes, encoding="ascii", errors="strict")
                            except UnicodeDecodeError:
                                await self.push("500 Error: strict ASCII mode")
                                continue
                    max_sz = self.command_size_limits[command] if session.extended_smtp else self.command_size_limit
                    if len(line) > max_sz:
                        await self.push("500 Command line too long")
                        continue
                    if not self._tls_handshake_okay and command != "QUIT":
                        await self.push("554 Command refused due to lack of security")
                        continue
                    if self.require_starttls and not self._tls_protocol and command not in ALLOWED_BEFORE_STARTTLS:
                        # RFC3207 part 4
                        await self.push("530 Must issue a STARTTLS command first")
                        continue

                    if self._enforce_call_limit:
                        budget = call_limit[command]
                        if budget < 1:
                            aiosmtpd_log.warning("%r over limit for %s", session.peer, command)
                            await self.push(f"421 4.7.0 {command} sent too many times")
                            self.transport.close()
                            continue
                        call_limit[command] = budget - 1

                    # What `_smtp_methods.get` answers (_CommandTable), without making a wrapper per verb.
                    if not command.isalpha() and has_control_characters(command):
                        self._reset_timeout()
                        self.stage = "other"
                        await self.push(replies.CONTROL_CHARACTERS)
                        continue
                    if command not in self._smtp_verbs:
                        aiosmtpd_log.warning("%r unrecognised: %s", session.peer, command)
                        bogus_budget -= 1
                        if bogus_budget < 1:
                            aiosmtpd_log.warning("%r too many bogus commands", session.peer)
                            await self.push("502 5.5.1 Too many unrecognized commands, goodbye.")
                            self.transport.close()
                            continue
                        await self.push(f'500 Error: command "{command}" not recognized')
                        continue

                    # Received a valid command, reset the timer.
                    self._reset_timeout()
                    await self._run_command(command, getattr(self, "smtp_" + command), arg)
                except asyncio.CancelledError:
                    # The connection got reset during the DATA command.
                    aiosmtpd_log.info("%r Connection lost during _handle_client()", session.peer)
                    self._writer.close()
                    raise
                except ConnectionResetError:
                    aiosmtpd_log.info("%r Connection lost during _handle_client()", session.peer)
                    self._writer.close()
                    raise
                except Exception as error:
                    status: Any = None  # the handler's reply text, as in aiosmtpd
                    try:
                        status = await self.handle_exception(error)
                    except Exception as inner_error:
                        try:
                            aiosmtpd_log.exception("%r Exception in handle_exception()", session.peer)
                            status = f"500 Error: ({inner_error.__class__.__name__}) {inner_error}"
                        except Exception:
                            status = "500 Error: Cannot describe error"
                    finally:
                        if isinstance(error, TLSSetupException):
                            self.transport.close()
                            self.connection_lost(error)
                        else:
                            await self.push(status)
        finally:
            if self.transport is None:  # connection_lost came first
                self._release()


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
    """aiosmtpd's verb -> method table; a verb holding control characters gets 501 instead of 'unrecognized'.

    A verb's guarded method is made on its first use in the session, not for all ~20 verbs at every connection.
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
        if has_control_characters(key):
            return self._reject_control
        method = super().get(key)
        if method is None:
            if key not in self.verbs:
                return default
            method = self[key] = self.session._guard(key, getattr(self.session, "smtp_" + key))
        return method

    def items(self) -> Any:
        """Every verb (aiosmtpd's HELP lists them)."""
        return {verb: self.get(verb) for verb in self.verbs}.items()

    async def _reject_control(self, arg: str | None) -> None:
        self.session.stage = "other"
        await self.session.push(replies.CONTROL_CHARACTERS)


# Our reply constants as sent: (text, bytes on the wire, code). They translate to themselves in every stage and
# are ASCII, so their encoding is the same with or without SMTPUTF8.
_WIRE: dict[str, tuple[str, bytes, int]] = {
    text: (text, text.encode("ascii") + b"\r\n", replies.code_of(text)) for text in replies._OWN if text.isascii()
}
