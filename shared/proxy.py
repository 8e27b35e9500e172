"""PROXY protocol (v1, v2) listeners for the mail services.

Only the load balancer may connect, every connection starts with its header, and on an implicit-TLS port the header
comes before the TLS handshake.

The header is read straight from the accepted socket, consuming exactly its bytes (aiosmtpd's parser asks for
them; a v1 line is peeked at first), so whatever the client sent behind it (a TLS ClientHello, pipelined commands)
is still in the kernel when the socket is handed to the protocol with `loop.connect_accepted_socket`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiosmtpd.proxy_protocol import get_proxy
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.limits import ConnectionLimiter, Reservation
from shared.logging import get_logger
from shared.netaddr import HostPort, Network, canonical_ip, in_networks
from shared.settings import ENV_PREFIX, Networks

log = get_logger(__name__)

# Why a connection was dropped before its protocol saw it (a bounded metric label).
DROP_REASONS = ("untrusted", "limit", "header", "tls", "error")
# A v1 header is at most 107 octets (haproxy's proxy-protocol.txt §2.1); a little slack for the error message.
_V1_LIMIT = 256
# What asyncio waits for a TLS handshake when it is not told otherwise.
TLS_HANDSHAKE_TIMEOUT = 60.0
# After an accept() error such as EMFILE, wait this long before accepting again (asyncio's own server does too).
_ACCEPT_RETRY_DELAY = 1.0


class ProxySettings(BaseSettings):
    """`POSTROOM_PROXY_*`, mixed into the settings of the services that can sit behind a PROXY-speaking balancer."""

    # The same as CommonSettings': pydantic merges the configs of all bases, so a default one here would win.
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    # The balancer's source addresses: the only peers allowed to connect (and to send a header) when PROXY is on.
    proxy_trusted_networks: Networks = Field(default=())
    # Whether a client address read from a header earns address-based trust (relay per POSTROOM_TRUSTED_NETWORKS,
    # POP3's loopback rule) as a direct peer's does. Off: behind the balancer only AUTH makes a client trusted.
    proxy_trust_client_networks: bool = False

    def require_proxy_networks(self, enabled: bool, variable: str) -> None:
        """Refuse PROXY on without the balancer's networks: any peer could then claim to be any client."""
        if enabled and not self.proxy_trusted_networks:
            raise ValueError(
                f"{ENV_PREFIX}PROXY_TRUSTED_NETWORKS: must list the load balancer's networks when {variable} is on"
            )


@dataclass(frozen=True)
class ProxiedPeer:
    """The two ends a proxied connection has: the balancer that connected and the client its header names."""

    balancer: str
    client: str | None  # None for LOCAL / UNKNOWN (the balancer's own health check) and non-IP families

    @property
    def address(self) -> str:
        """The address caps and logs use: the client's, or the balancer's when the header names none."""
        return self.client or self.balancer

    def trusted_in(self, networks: tuple[Network, ...], trust_clients: bool) -> bool:
        """Address-based trust: only with the operator's opt-in, and only for an address the header did name."""
        return trust_clients and self.client is not None and in_networks(self.client, networks)


ProtocolFactory = Callable[[ProxiedPeer, Reservation], asyncio.BaseProtocol]


class ProxyHeaderError(Exception):
    """The connection did not start with a valid PROXY header."""


class _SocketReader:
    """aiosmtpd's AsyncReader over a non-blocking socket that never takes a byte beyond what it is asked for."""

    def __init__(self, sock: socket.socket, loop: asyncio.AbstractEventLoop) -> None:
        self.sock = sock
        self.loop = loop

    async def _readable(self) -> None:
        waiter: asyncio.Future[None] = self.loop.create_future()

        def ready() -> None:
            if not waiter.done():
                waiter.set_result(None)

        fd = self.sock.fileno()
        self.loop.add_reader(fd, ready)
        try:
            await waiter
        finally:
            self.loop.remove_reader(fd)

    async def _recv(self, n: int, flags: int = 0) -> bytes:
        while True:
            try:
                return self.sock.recv(n, flags)
            except (BlockingIOError, InterruptedError):
                await self._readable()

    async def read(self, n: int = -1) -> bytes:
        return await self._recv(n if n > 0 else _V1_LIMIT)

    async def readexactly(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            piece = await self._recv(n - len(data))
            if not piece:
                raise asyncio.IncompleteReadError(data, n)
            data += piece
        return data

    async def readuntil(self, separator: bytes = b"\n") -> bytes:
        """Up to and including `separator`: peek, then take only the bytes up to it (the rest stays queued)."""
        data = b""
        while True:
            peeked = await self._recv(_V1_LIMIT - len(data), socket.MSG_PEEK)
            if not peeked:
                raise asyncio.IncompleteReadError(data, None)
            end = peeked.find(separator)
            # Without the separator everything peeked belongs to the line: take it all, so the next wait for
            # readability waits for new bytes rather than firing at once for the ones already seen.
            data += self.sock.recv(len(peeked) if end < 0 else end + len(separator))
            if end >= 0:
                return data
            if len(data) >= _V1_LIMIT:
                raise asyncio.LimitOverrunError("PROXY v1 line too long", len(data))


def client_address(proxy: Any) -> str | None:
    """The client IP a parsed header names; None for LOCAL, UNKNOWN/UNSPEC and AF_UNIX."""
    source = proxy.src_addr
    if isinstance(source, ipaddress.IPv4Address | ipaddress.IPv6Address):
        return canonical_ip(source)
    return None


async def read_header(sock: socket.socket, timeout: float) -> str | None:
    """Read a PROXY v1/v2 header off `sock`; the client address it names (None: LOCAL/UNKNOWN); ProxyHeaderError."""
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(timeout):
            proxy = await get_proxy(_SocketReader(sock, loop))
    except TimeoutError:
        raise ProxyHeaderError("no PROXY header in time") from None
    except (OSError, EOFError) as exc:  # asyncio.IncompleteReadError is an EOFError
        raise ProxyHeaderError(f"connection lost: {exc}") from None
    except Exception as exc:  # what aiosmtpd's parser lets through (LimitOverrunError, struct errors, ...)
        raise ProxyHeaderError(f"{type(exc).__name__}: {exc}") from None
    if not proxy.valid:
        raise ProxyHeaderError(proxy.error or "not a PROXY header")
    return client_address(proxy)


class ProxyListener:
    """A listening socket whose connections come from the load balancer only, each opened by a PROXY header.

    A peer outside `trusted` is closed at once, whatever it sends. Each other connection holds a global slot of
    `limiter` while its header is read (at most `header_timeout`); then, TLS done if `tls` is given, `factory`
    makes its protocol with the revealed peer and that slot, and the protocol admits it (per-IP cap included).
    """

    def __init__(
        self,
        name: str,
        address: HostPort,
        *,
        factory: ProtocolFactory,
        trusted: tuple[Network, ...],
        limiter: ConnectionLimiter,
        header_timeout: float,
        tls: ssl.SSLContext | None = None,
        handshake_timeout: float = TLS_HANDSHAKE_TIMEOUT,
        reuse_port: bool = False,
        on_drop: Callable[[str], None] | None = None,
    ) -> None:
        self.name = name
        self.address = address
        self.factory = factory
        self.trusted = trusted
        self.limiter = limiter
        self.header_timeout = header_timeout
        self.tls = tls
        self.handshake_timeout = handshake_timeout
        self.reuse_port = reuse_port
        self.on_drop = on_drop
        self.sockets: list[socket.socket] = []
        self._accepting: list[asyncio.Task[None]] = []
        self._pending: set[asyncio.Task[None]] = set()
        self._closed = asyncio.Event()

    async def start(self) -> None:
        """Bind and listen (OSError when the address is taken), then accept in the background."""
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(
            self.address.host or None,
            self.address.port,
            type=socket.SOCK_STREAM,
            flags=socket.AI_PASSIVE,
        )
        try:
            for family, kind, proto, _name, sockaddr in dict.fromkeys(infos):
                sock = socket.socket(family, kind, proto)
                self.sockets.append(sock)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if self.reuse_port:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)  # as asyncio's create_server
                sock.bind(sockaddr)
                sock.listen(512)
                sock.setblocking(False)
        except BaseException:
            self._close_sockets()
            raise
        name = f"proxy-accept-{self.name}"
        self._accepting = [loop.create_task(self._accept(sock), name=name) for sock in self.sockets]

    def is_serving(self) -> bool:
        return bool(self._accepting) and not any(task.done() for task in self._accepting)

    def close(self) -> None:
        """Stop accepting and drop the connections still waiting for their header; admitted ones are left alone."""
        for task in (*self._accepting, *self._pending):
            task.cancel()
        self._close_sockets()
        self._closed.set()

    async def wait_closed(self) -> None:
        await self._closed.wait()
        tasks = [*self._accepting, *self._pending]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    def _close_sockets(self) -> None:
        for sock in self.sockets:
            sock.close()

    def _drop(self, conn: socket.socket, reason: str) -> None:
        if self.on_drop is not None:
            self.on_drop(reason)  # counted before the peer can see the close
        with contextlib.suppress(OSError):
            conn.close()

    async def _accept(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, peer = await loop.sock_accept(sock)
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                continue
            except OSError as exc:  # EMFILE, ENFILE, ENOBUFS: the connection waits in the backlog meanwhile
                log.warning("accept failed", listener=self.name, error=str(exc))
                await asyncio.sleep(_ACCEPT_RETRY_DELAY)
                continue
            balancer = canonical_ip(peer[0]) if isinstance(peer, tuple) and peer else ""
            if not in_networks(balancer, self.trusted):
                # Only the balancer may speak PROXY; anyone else could claim any client address.
                log.info("proxy peer not trusted", listener=self.name, peer=balancer)
                self._drop(conn, "untrusted")
                continue
            reservation = self.limiter.reserve()
            if reservation is None:
                self._drop(conn, "limit")
                continue
            conn.setblocking(False)
            task = loop.create_task(self._serve(conn, balancer, reservation))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

    async def _serve(self, conn: socket.socket, balancer: str, reservation: Reservation) -> None:
        handed = False
        try:
            try:
                client = await read_header(conn, self.header_timeout)
            except ProxyHeaderError as exc:
                log.info("proxy header refused", listener=self.name, peer=balancer, error=str(exc))
                self._drop(conn, "header")
                return
            peer = ProxiedPeer(balancer, client)
            loop = asyncio.get_running_loop()
            handed = True
            try:
                await loop.connect_accepted_socket(
                    lambda: self.factory(peer, reservation),
                    conn,
                    ssl=self.tls,
                    ssl_handshake_timeout=self.handshake_timeout if self.tls is not None else None,
                )
            except (OSError, ssl.SSLError, TimeoutError) as exc:
                log.info("proxied tls handshake failed", listener=self.name, peer=peer.address, error=str(exc))
                self._drop(conn, "tls")
            except Exception:
                log.exception("proxied connection failed", listener=self.name, peer=peer.address)
                self._drop(conn, "error")
        except asyncio.CancelledError:
            if not handed:
                conn.close()
            raise
        finally:
            self.limiter.cancel(reservation)  # a no-op when the protocol admitted the connection on it
