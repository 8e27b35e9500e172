"""The per-connection loop: read a line, parse, gate and dispatch, write the reply, count it; one place for limits."""

from __future__ import annotations

import asyncio
import contextlib
import ssl

from services.pop3 import metrics, replies
from services.pop3.command import Command, ParseError, Retr, Top, parse, verb_of
from services.pop3.connection import Connection, ConnectionClosed, LineTooLong
from services.pop3.dispatch import gate
from services.pop3.maildrop import WholeBody
from services.pop3.response import Action, BodyEncoder, Challenge, MultiLine, Reply, Response, Stream
from services.pop3.state import ServerContext, SessionState
from services.store.outage import outage
from shared.logging import get_logger

log = get_logger(__name__)

# Replies to pipelined commands are gathered up to this size before a send (RFC 2449 §6.6 PIPELINING).
FLUSH_AT = 65536
# At most this many pipelined commands are looked ahead at to read their messages' first chunks in one round trip.
PREFETCH_LINES = 64


class AbortSession(Exception):
    """End the session now without a reply (the state on the wire no longer allows one)."""


class Session:
    """One POP3 session over one Connection; handlers decide, this loop speaks."""

    def __init__(self, conn: Connection, ctx: ServerContext, peer_ip: str, tls: bool, local: bool = False) -> None:
        self.conn = conn
        self.ctx = ctx
        self.settings = ctx.settings
        peer = f"{peer_ip}:{conn.peer()[1]}"
        self.state = SessionState(ctx=ctx, peer_ip=peer_ip, tls=tls, log=log.bind(peer=peer), local=local)
        self.bad_commands = 0
        self.close_reason = "disconnect"
        self.busy = False
        self.stopping = False
        self._parsed: dict[bytes, Retr | Top] = {}

    async def run(self) -> None:
        metrics.SESSIONS_ACTIVE.inc()
        try:
            self.state.log.debug("pop3 session start", tls=self.state.tls)
            await self._send(replies.greeting(self.settings.hostname).encode())
            await self._loop()
        except ConnectionClosed:
            self.close_reason = "disconnect"
        except TimeoutError:
            self.close_reason = "autologout"  # a client that stopped reading what we send
        except AbortSession:
            self.close_reason = "error"
        except asyncio.CancelledError:
            self.close_reason = "shutdown"
            raise
        except Exception:
            self.close_reason = "error"
            self.state.log.exception("pop3 session failed")
        finally:
            await self._finish()

    async def _finish(self) -> None:
        maildrop, self.state.maildrop = self.state.maildrop, None
        if maildrop is not None:
            # Shielded: the lock is released even when the session is being cancelled (shutdown).
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(maildrop.close())
        if self.close_reason in ("autologout", "error"):
            self.conn.abort()  # a peer that stopped reading must not keep the socket open with queued data
        else:
            self.conn.close()
        metrics.SESSIONS_ACTIVE.dec()
        metrics.SESSIONS_CLOSED.labels(self.close_reason).inc()
        self.state.log.debug("pop3 session end", reason=self.close_reason)

    # -- reading -----------------------------------------------------------------------------------------------
    async def _read(self) -> bytes | None:
        """The next client line; raises TimeoutError when the autologout timer (RFC 1939 §3) runs out."""
        line = self.conn.buffered_line()
        if line is not None:
            return line  # pipelined: already here, no timer to arm
        async with asyncio.timeout(self.settings.pop3_autologout):
            return await self.conn.readline()

    async def _drain(self) -> None:
        """Send what is queued; wait (under the autologout timer) only while the client's socket is full."""
        if self.conn.drain_now():
            return
        async with asyncio.timeout(self.settings.pop3_autologout):
            await self.conn.drain()

    async def _loop(self) -> None:
        while True:
            try:
                line = await self._read()
            except LineTooLong:
                action = await self._deliver(self._bad(replies.ERR_LINE_TOO_LONG), "INVALID")
            except TimeoutError:
                # RFC 1939 §3: on autologout close without a response and without entering UPDATE.
                self.close_reason = "autologout"
                self.state.log.info("pop3 autologout")
                return
            else:
                if line is None:
                    return
                self.busy = True
                try:
                    outcome, verb = await self._execute(line)
                    action = await self._deliver(outcome, verb)
                finally:
                    self.busy = False
            # Replies wait while more pipelined commands are already here; otherwise they go out now.
            if action is not Action.NONE or not self.conn.has_buffered_line():
                await self._drain()
            if action is Action.CLOSE:
                return
            if self.stopping:
                self.close_reason = "shutdown"
                return
            if action is Action.START_TLS and not await self._start_tls():
                return

    async def _execute(self, line: bytes) -> tuple[Response, str]:
        # A RETR/TOP line parsed by the last read-ahead is not parsed again (parse depends on the line alone).
        command: Command | None = self._parsed.pop(line, None)
        if command is None:
            try:
                command = parse(line)
            except ParseError as exc:
                return self._bad(replies.err_syntax(exc.reply_text)), exc.verb
        verb = verb_of(command)
        entry = gate(self.state, command)
        if entry is None:
            return self._bad(replies.ERR_WRONG_STATE), verb
        if isinstance(command, Retr | Top):
            await self._prefetch(command.msg)
        try:
            return await entry.handler(self.state, command), verb
        except Exception as exc:
            # Invariant 8: details to the log, a generic temporary reply to the client.
            reason = outage(exc)
            if reason is None:
                self.state.log.exception("pop3 command failed", command=verb)
            else:
                # Redis down or refusing is an operational state, not a bug: one line and a counter.
                self.state.log.warning("store unavailable", command=verb, reason=reason, error=str(exc))
                metrics.STORE_ERRORS.labels(reason).inc()
            return replies.ERR_TEMPORARY, verb

    async def _prefetch(self, msg: int) -> None:
        """With more RETR/TOP pipelined behind this one, read all their first chunks in one Redis round trip."""
        maildrop = self.state.maildrop
        if maildrop is None or maildrop.is_prefetched(msg):
            return
        msgs = [msg]
        if len(self._parsed) > PREFETCH_LINES:
            self._parsed.clear()
        for line in self.conn.buffered_lines(PREFETCH_LINES):
            # A line parsed by an earlier read-ahead (beyond that one's budget) is not parsed again.
            fetch = self._parsed.get(line)
            if fetch is None:
                try:
                    command = parse(line)
                except ParseError:
                    continue
                if not isinstance(command, Retr | Top):
                    continue
                fetch = self._parsed[line] = command
            msgs.append(fetch.msg)
        if len(msgs) < 2:
            return
        try:
            await maildrop.prefetch(msgs, self.settings.pop3_chunk_size)
        except Exception as exc:
            # Only an optimisation: each RETR then reads (and reports a failure) for itself.
            self.state.log.debug("pop3 prefetch failed", error=str(exc))

    def _bad(self, reply: Reply) -> Reply:
        self.bad_commands += 1
        if self.bad_commands >= self.settings.pop3_max_bad_commands:
            self.close_reason = "bad_commands"
            return replies.ERR_TOO_MANY_BAD_COMMANDS
        return reply

    # -- writing -----------------------------------------------------------------------------------------------
    async def _send(self, data: bytes, flush: bool = True) -> None:
        """Queue `data`; send now when asked or when enough is queued (pipelined replies share one send)."""
        self.conn.write(data)
        if flush or self.conn.queued >= FLUSH_AT:
            await self._drain()

    async def _deliver(self, outcome: Response, verb: str) -> Action:
        """Write one outcome (following SASL continuations to the final reply) and return what to do next."""
        while isinstance(outcome, Challenge):
            outcome = await self._continue(outcome)
        if isinstance(outcome, Stream):
            await self._stream(outcome)
            head = outcome.head
        else:
            await self._send(outcome.encode(), flush=False)
            head = outcome.head if isinstance(outcome, MultiLine) else outcome
        metrics.count_command(verb, head.ok)
        # The verb and the reply only: arguments may hold a password.
        self.state.log.debug("pop3 command", command=verb, ok=head.ok, reply=head.text)
        if head is replies.ERR_TOO_MANY_AUTH_FAILURES:
            self.close_reason = "auth_failures"
        elif verb == "QUIT":
            self.close_reason = "quit"
        return head.action

    async def _continue(self, challenge: Challenge) -> Response:
        await self._send(challenge.encode())
        try:
            line = await self._read()
        except LineTooLong:
            return replies.ERR_LINE_TOO_LONG
        if line is None:
            raise ConnectionClosed()
        try:
            return await challenge.resume(line)
        except Exception:
            self.state.log.exception("pop3 sasl step failed")
            return replies.ERR_TEMPORARY

    async def _stream(self, stream: Stream) -> None:
        """RETR/TOP body: chunk by chunk, dot-stuffed, with back-pressure from the client's socket."""
        encoder = BodyEncoder(stream.top_lines, stream.wire)
        chunks = stream.chunks
        if isinstance(chunks, WholeBody):
            # Read whole before this +OK (most messages): no store read is left that could fail after it.
            self.conn.write(stream.head.encode())
            self.conn.write(encoder.feed(chunks.body))
            await self._send(encoder.finish(), flush=False)
            if stream.on_complete is not None:
                stream.on_complete()
            return
        try:
            # Queued, not sent: the first chunk (read before this +OK) follows it in the same send.
            self.conn.write(stream.head.encode())
            async for chunk in chunks:
                await self._send(encoder.feed(chunk), flush=False)
                if encoder.done:
                    break
        except (ConnectionClosed, TimeoutError):
            raise
        except Exception as exc:
            # After +OK there is no way to say -ERR: close so the client sees a failed transfer, not a short one.
            self.state.log.error("pop3 read failed mid-message", error=str(exc))
            raise AbortSession() from exc
        finally:
            with contextlib.suppress(Exception):
                await chunks.aclose()  # type: ignore[attr-defined]
        await self._send(encoder.finish(), flush=False)
        if stream.on_complete is not None:
            stream.on_complete()

    # -- STLS --------------------------------------------------------------------------------------------------
    async def _start_tls(self) -> bool:
        context = self.ctx.tls_context
        assert context is not None
        try:
            await self.conn.start_tls(context, self.settings.pop3_tls_handshake_timeout)
        except (ssl.SSLError, OSError, TimeoutError, ConnectionClosed) as exc:
            self.close_reason = "error"
            self.state.log.info("pop3 stls handshake failed", error=str(exc))
            return False
        metrics.STLS_UPGRADES.inc()
        # RFC 2595 §4: the session starts over in AUTHORIZATION; anything learnt before TLS is forgotten.
        self.state.tls = True
        self.state.user = None
        return True
