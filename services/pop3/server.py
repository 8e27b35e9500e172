"""The POP3 listeners (plain with STLS, and implicit TLS) and the set of live sessions, with a draining stop."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
from collections.abc import Callable
from dataclasses import dataclass

from aiosmtpd.proxy_protocol import get_proxy

from services.pop3 import metrics, replies
from services.pop3.connection import Connection
from services.pop3.session import Session
from services.pop3.state import ServerContext
from shared.errors import ConfigError
from shared.logging import get_logger
from shared.netaddr import HostPort
from shared.settings import ENV_PREFIX

log = get_logger(__name__)

PeerOf = Callable[[Connection], str]


def default_peer_of(conn: Connection) -> str:
    return conn.peer()[0]


@dataclass(frozen=True)
class Listener:
    name: str
    address: HostPort
    implicit_tls: bool


class Pop3Server:
    """Accepts connections and runs one Session task each; `stop` drains them."""

    def __init__(self, ctx: ServerContext, peer_of: PeerOf = default_peer_of) -> None:
        self.ctx = ctx
        self.peer_of = peer_of
        self.listeners: list[Listener] = []
        settings = ctx.settings
        if settings.pop3_listen is not None:
            self.listeners.append(Listener("pop3", settings.pop3_listen, False))
        if settings.pop3s_listen is not None:
            self.listeners.append(Listener("pop3s", settings.pop3s_listen, True))
        self.ports: dict[str, int] = {}
        self._servers: list[asyncio.Server] = []
        self._sessions: dict[asyncio.Task[None], Session] = {}
        self._per_ip: dict[str, int] = {}
        self._handshakes: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        for listener in self.listeners:
            if listener.implicit_tls and self.ctx.tls_context is None:
                raise RuntimeError("the pop3s listener needs a TLS context")
            try:
                server = await loop.create_server(
                    lambda listener=listener: self._protocol(listener),
                    listener.address.host,
                    listener.address.port,
                    ssl=self.ctx.tls_context if self._tls_by_transport(listener) else None,
                    ssl_handshake_timeout=(
                        self.ctx.settings.pop3_tls_handshake_timeout if self._tls_by_transport(listener) else None
                    ),
                    reuse_address=True,
                )
            except OSError as exc:
                await self.stop(grace=0)
                variable = f"{ENV_PREFIX}{listener.name.upper()}_LISTEN"
                raise ConfigError(f"{variable}: cannot listen on {listener.address}: {exc.strerror or exc}") from None
            self._servers.append(server)
            self.ports[listener.name] = server.sockets[0].getsockname()[1]
            log.info("pop3 listening", listener=listener.name, address=str(listener.address))

    def _protocol(self, listener: Listener) -> Connection:
        return Connection(lambda conn: self._accept(listener, conn), self.ctx.settings.pop3_line_limit)

    def _tls_by_transport(self, listener: Listener) -> bool:
        # With the PROXY protocol the plaintext header comes first, so pop3s starts TLS after reading it.
        return listener.implicit_tls and not self.ctx.settings.pop3_proxy_protocol

    def _accept(self, listener: Listener, conn: Connection) -> None:
        metrics.CONNECTIONS.labels(listener.name).inc()
        if self.ctx.settings.pop3_proxy_protocol:
            task = asyncio.get_running_loop().create_task(self._accept_proxied(listener, conn))
            self._handshakes.add(task)
            task.add_done_callback(self._handshakes.discard)
            return
        self._admit(listener, conn, self.peer_of(conn))

    async def _accept_proxied(self, listener: Listener, conn: Connection) -> None:
        """Read the PROXY header (and for pop3s do the TLS handshake), then admit the real client."""
        settings = self.ctx.settings
        try:
            async with asyncio.timeout(settings.pop3_proxy_protocol_timeout):
                proxy = await get_proxy(conn)
            if not proxy.valid:
                raise ValueError(proxy.error or "not a PROXY header")
            source = proxy.src_addr
            # A LOCAL command or an UNKNOWN family (the balancer's own health check) carries no client address.
            peer_ip = str(ipaddress.ip_address(source)) if source else self.peer_of(conn)
            if listener.implicit_tls:
                assert self.ctx.tls_context is not None
                await conn.start_tls(self.ctx.tls_context, settings.pop3_tls_handshake_timeout)
        except Exception as exc:  # malformed header, timeout, failed handshake, peer gone: nothing to answer
            log.info("pop3 proxy header refused", listener=listener.name, error=f"{type(exc).__name__}: {exc}")
            conn.abort()
            return
        self._admit(listener, conn, peer_ip)

    def _admit(self, listener: Listener, conn: Connection, peer_ip: str) -> None:
        settings = self.ctx.settings
        if (
            len(self._sessions) >= settings.pop3_max_connections
            or self._per_ip.get(peer_ip, 0) >= settings.pop3_max_connections_per_ip
        ):
            # Refused before any per-session state exists, so a connection flood costs almost nothing.
            metrics.CONNECTIONS_REFUSED.inc()
            with contextlib.suppress(Exception):
                conn.write(replies.ERR_TOO_MANY_CONNECTIONS.encode())
            conn.close()
            return
        self._per_ip[peer_ip] = self._per_ip.get(peer_ip, 0) + 1
        session = Session(conn, self.ctx, peer_ip, tls=listener.implicit_tls)
        task = asyncio.get_running_loop().create_task(session.run(), name=f"pop3-session-{listener.name}")
        self._sessions[task] = session
        task.add_done_callback(self._forget)

    def _forget(self, task: asyncio.Task[None]) -> None:
        session = self._sessions.pop(task, None)
        if session is not None:
            ip = session.state.peer_ip
            remaining = self._per_ip.get(ip, 1) - 1
            if remaining > 0:
                self._per_ip[ip] = remaining
            else:
                self._per_ip.pop(ip, None)

    @property
    def serving(self) -> bool:
        return bool(self._servers) and all(server.is_serving() for server in self._servers)

    @property
    def session_count(self) -> int:
        return len(self._sessions)

    async def stop(self, grace: float | None = None) -> None:
        """Stop accepting; end idle sessions now and busy ones after `grace` seconds. Nothing is deleted."""
        for server in self._servers:
            server.close()
        for handshake in list(self._handshakes):
            handshake.cancel()
        grace = self.ctx.settings.pop3_shutdown_grace if grace is None else grace
        for task, session in list(self._sessions.items()):
            session.stopping = True
            if not session.busy:
                task.cancel()
        if self._sessions:
            # Busy sessions finish the command in hand (a RETR, an UPDATE) and then end by themselves.
            await asyncio.wait(list(self._sessions), timeout=grace)
        for task in list(self._sessions):
            task.cancel()
        if self._sessions:
            await asyncio.gather(*self._sessions, return_exceptions=True)
        for server in self._servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 5)
        self._servers.clear()
