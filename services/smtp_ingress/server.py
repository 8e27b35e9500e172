"""The three listeners (MX, submission, implicit TLS) built with loop.create_server, and their graceful drain."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from dataclasses import dataclass

from services.smtp_ingress import metrics, replies
from services.smtp_ingress.config import IngressSettings
from services.smtp_ingress.handler import IngressHandler
from services.smtp_ingress.session import IngressSMTP, SessionRegistry
from shared.errors import ConfigError
from shared.limits import ConnectionLimiter, Reservation
from shared.logging import get_logger
from shared.netaddr import HostPort
from shared.proxy import ProxiedPeer, ProxyListener

log = get_logger(__name__)

# A listening asyncio.Server, or a ProxyListener when POSTROOM_SMTP_PROXY_PROTOCOL is on.
Listening = asyncio.Server | ProxyListener


@dataclass(frozen=True)
class ListenerSpec:
    """How one listener behaves (RFC 5321 MX, RFC 6409 submission, RFC 8314 implicit TLS)."""

    name: str
    address: HostPort
    implicit_tls: bool
    starttls_required: bool
    auth_required: bool


def listener_specs(settings: IngressSettings) -> list[ListenerSpec]:
    specs = []
    if settings.smtp_listen is not None:
        specs.append(ListenerSpec("smtp", settings.smtp_listen, False, False, False))
    if settings.submission_listen is not None:
        specs.append(ListenerSpec("submission", settings.submission_listen, False, True, True))
    if settings.smtps_listen is not None:
        specs.append(ListenerSpec("smtps", settings.smtps_listen, True, False, True))
    return specs


class IngressServer:
    """Owns the listening sockets and the registry of open sessions."""

    def __init__(self, settings: IngressSettings, handler: IngressHandler, tls: ssl.SSLContext) -> None:
        self.settings = settings
        self.handler = handler
        self.tls = tls
        self.registry = SessionRegistry(
            limiter=ConnectionLimiter(settings.smtp_max_connections, settings.smtp_max_connections_per_ip),
            trusted_networks=settings.trusted_networks,
            max_errors=settings.smtp_max_errors,
            session_timeout=settings.smtp_session_timeout,
            spool_directory=settings.smtp_spool_dir,
            trust_proxied_clients=settings.proxy_trust_client_networks,
        )
        self.servers: dict[str, Listening] = {}
        self._templates: dict[str, IngressSMTP] = {}

    def _protocol(self, spec: ListenerSpec) -> IngressSMTP:
        """Each connection's session is a clone of one pristine session per listener, built on first use."""
        template = self._templates.get(spec.name)
        if template is None:
            template = self._templates[spec.name] = self._new_protocol(spec)
        return template.clone()

    def _proxied_protocol(self, spec: ListenerSpec, peer: ProxiedPeer, reservation: Reservation) -> IngressSMTP:
        session = self._protocol(spec)
        session.proxied = (peer, reservation)
        return session

    def _new_protocol(self, spec: ListenerSpec) -> IngressSMTP:
        return IngressSMTP(
            self.handler,
            registry=self.registry,
            listener=spec.name,
            hostname=self.settings.hostname,
            ident=replies.IDENT,
            tls_context=None if spec.implicit_tls else self.tls,
            require_starttls=spec.starttls_required,
            auth_required=spec.auth_required,
            # On the implicit-TLS port the transport is encrypted before aiosmtpd sees it.
            auth_require_tls=not spec.implicit_tls,
            data_size_limit=self.settings.max_message_size,
            enable_SMTPUTF8=True,
            decode_data=False,
            timeout=self.settings.smtp_command_timeout,
            loop=asyncio.get_running_loop(),
        )

    async def start(self) -> None:
        for spec in listener_specs(self.settings):
            try:
                server = await self._listen(spec)
            except OSError as exc:
                await self.close()
                variable = f"POSTROOM_{spec.name.upper()}_LISTEN"
                raise ConfigError(f"{variable}: cannot listen on {spec.address}: {exc.strerror or exc}") from None
            self.servers[spec.name] = server
            log.info("listening", listener=spec.name, address=str(spec.address))

    async def _listen(self, spec: ListenerSpec) -> Listening:
        # Several worker processes listen on the same port; the kernel balances accepts across them.
        reuse_port = self.settings.smtp_workers > 1
        tls = self.tls if spec.implicit_tls else None
        if self.settings.smtp_proxy_protocol:
            # The balancer's header comes first, then (on 465) the TLS handshake: the listener reads it off the
            # socket before the session exists.
            dropped = metrics.PROXY_DROPPED
            listener = ProxyListener(
                spec.name,
                spec.address,
                factory=lambda peer, reservation: self._proxied_protocol(spec, peer, reservation),
                trusted=self.settings.proxy_trusted_networks,
                limiter=self.registry.limiter,
                header_timeout=self.settings.smtp_proxy_protocol_timeout,
                tls=tls,
                reuse_port=reuse_port,
                on_drop=lambda reason: dropped.labels(spec.name, reason).inc(),
            )
            await listener.start()
            return listener
        return await asyncio.get_running_loop().create_server(
            lambda: self._protocol(spec),
            spec.address.host,
            spec.address.port,
            ssl=tls,
            reuse_address=True,
            reuse_port=reuse_port,
            backlog=512,
        )

    @property
    def listening(self) -> bool:
        return bool(self.servers) and all(server.is_serving() for server in self.servers.values())

    def port(self, name: str) -> int:
        return int(self.servers[name].sockets[0].getsockname()[1])

    async def drain(self, timeout: float) -> None:
        """SIGTERM: 421 to new sessions, let open transactions finish (up to `timeout`), then close everything."""
        log.info("draining", sessions=len(self.registry.sessions))
        self.registry.drain()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.registry.empty.wait(), timeout)
        for session in list(self.registry.sessions):
            session.close_with(replies.SHUTTING_DOWN)
        await self.close()

    async def close(self) -> None:
        for server in self.servers.values():
            server.close()
        for server in self.servers.values():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 5)
        self.servers.clear()
