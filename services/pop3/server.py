"""The POP3 listeners (plain with STLS, and implicit TLS) and the set of live sessions, with a draining stop."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass

from services.pop3 import metrics, replies
from services.pop3.connection import Connection
from services.pop3.session import Session
from services.pop3.state import ServerContext, is_loopback
from shared.errors import ConfigError
from shared.limits import ConnectionLimiter, Reservation
from shared.logging import get_logger
from shared.netaddr import HostPort
from shared.proxy import ProxiedPeer, ProxyListener
from shared.settings import ENV_PREFIX

log = get_logger(__name__)

PeerOf = Callable[[Connection], str]
# A listening asyncio.Server, or a ProxyListener when POSTROOM_POP3_PROXY_PROTOCOL is on.
Listening = asyncio.Server | ProxyListener


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
        self.limiter = ConnectionLimiter(settings.pop3_max_connections, settings.pop3_max_connections_per_ip)
        self._servers: list[Listening] = []
        self._sessions: dict[asyncio.Task[None], Session] = {}

    async def start(self) -> None:
        for listener in self.listeners:
            if listener.implicit_tls and self.ctx.tls_context is None:
                raise RuntimeError("the pop3s listener needs a TLS context")
            try:
                server = await self._listen(listener)
            except OSError as exc:
                await self.stop(grace=0)
                variable = f"{ENV_PREFIX}{listener.name.upper()}_LISTEN"
                raise ConfigError(f"{variable}: cannot listen on {listener.address}: {exc.strerror or exc}") from None
            self._servers.append(server)
            self.ports[listener.name] = server.sockets[0].getsockname()[1]
            log.info("pop3 listening", listener=listener.name, address=str(listener.address))

    async def _listen(self, listener: Listener) -> Listening:
        settings = self.ctx.settings
        tls = self.ctx.tls_context if listener.implicit_tls else None
        # Several worker processes listen on the same port; the kernel balances accepts across them.
        reuse_port = settings.pop3_workers > 1
        if settings.pop3_proxy_protocol:
            # The balancer's header comes first, then (pop3s) the TLS handshake: shared/proxy.py reads it.
            proxy = ProxyListener(
                listener.name,
                listener.address,
                factory=lambda peer, reservation: self._proxied_protocol(listener, peer, reservation),
                trusted=settings.proxy_trusted_networks,
                limiter=self.limiter,
                header_timeout=settings.pop3_proxy_protocol_timeout,
                tls=tls,
                handshake_timeout=settings.pop3_tls_handshake_timeout,
                reuse_port=reuse_port,
                on_drop=lambda reason: metrics.PROXY_DROPPED.labels(reason).inc(),
            )
            await proxy.start()
            return proxy
        return await asyncio.get_running_loop().create_server(
            lambda: Connection(lambda conn: self._accept(listener, conn), settings.pop3_line_limit),
            listener.address.host,
            listener.address.port,
            ssl=tls,
            ssl_handshake_timeout=settings.pop3_tls_handshake_timeout if tls is not None else None,
            reuse_address=True,
            reuse_port=reuse_port,
        )

    def _accept(self, listener: Listener, conn: Connection) -> None:
        ip = self.peer_of(conn)
        self._admit(listener, conn, ip, is_loopback(ip))

    def _proxied_protocol(self, listener: Listener, peer: ProxiedPeer, reservation: Reservation) -> Connection:
        settings = self.ctx.settings
        # The loopback rule trusts a header's address only with the operator's opt-in, never a LOCAL/UNKNOWN one.
        local = settings.proxy_trust_client_networks and peer.client is not None and is_loopback(peer.client)
        return Connection(
            lambda conn: self._admit(listener, conn, peer.address, local, reservation), settings.pop3_line_limit
        )

    def _admit(
        self, listener: Listener, conn: Connection, peer_ip: str, local: bool, reservation: Reservation | None = None
    ) -> None:
        metrics.CONNECTIONS.labels(listener.name).inc()
        if self.limiter.admit(peer_ip, reservation=reservation) is not None:
            # Refused before any per-session state exists, so a connection flood costs almost nothing.
            metrics.CONNECTIONS_REFUSED.inc()
            with contextlib.suppress(Exception):
                conn.write(replies.ERR_TOO_MANY_CONNECTIONS.encode())
            conn.close()
            return
        session = Session(conn, self.ctx, peer_ip, tls=listener.implicit_tls, local=local)
        task = asyncio.get_running_loop().create_task(session.run(), name=f"pop3-session-{listener.name}")
        self._sessions[task] = session
        task.add_done_callback(self._forget)

    def _forget(self, task: asyncio.Task[None]) -> None:
        session = self._sessions.pop(task, None)
        if session is not None:
            self.limiter.release(session.state.peer_ip)

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
        grace = self.ctx.settings.pop3_drain_timeout if grace is None else grace
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
