"""A relay host for tests (aiosmtpd) that requires AUTH and records every byte its clients sent, and whether TLS
protected it."""

from __future__ import annotations

import ssl
import threading
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

from tests.delivery.smtpsink import Behaviour, Received, SinkHandler

USERNAME, PASSWORD = "relayuser", "relaypass"


def _authenticator(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
    if isinstance(data, LoginPassword) and data.login == USERNAME.encode() and data.password == PASSWORD.encode():
        return AuthResult(success=True, auth_data=data.login)
    return AuthResult(success=False, handled=False)


class _Wire:
    """What clients sent, chunk by chunk as the SMTP layer received it, each with whether TLS was on."""

    def __init__(self) -> None:
        self.chunks: list[tuple[bool, bytes]] = []
        self.lock = threading.Lock()

    def add(self, tls: bool, data: bytes) -> None:
        with self.lock:
            self.chunks.append((tls, bytes(data)))

    def sent(self, tls: bool) -> bytes:
        with self.lock:
            return b"".join(data for on, data in self.chunks if on is tls)


class _RecordingSMTP(SMTP):
    """aiosmtpd's server; before STARTTLS `data_received` gets the bytes off the socket, after it (or with implicit
    TLS) the decrypted ones, so the plaintext record is exactly what crossed the wire in the clear."""

    def __init__(self, wire: _Wire, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.wire = wire

    def data_received(self, data: bytes) -> None:
        transport = self.transport
        tls = transport is not None and transport.get_extra_info("sslcontext") is not None
        self.wire.add(tls, data)
        super().data_received(data)


class _RelayController(Controller):
    def __init__(self, wire: _Wire, *args: Any, **kwargs: Any) -> None:
        self.wire = wire
        super().__init__(*args, **kwargs)

    def factory(self) -> SMTP:
        return _RecordingSMTP(self.wire, self.handler, **self.SMTP_kwargs)


class RelayHost:
    """An SMTP relay on `address:port` that refuses MAIL before AUTH (`530`).

    `starttls`: the context STARTTLS uses (None: STARTTLS not offered, and AUTH offered in the clear, as a
    careless relay would). `implicit`: the context of a TLS-from-the-first-byte listener (port 465 style).
    """

    def __init__(
        self,
        address: str,
        port: int,
        starttls: ssl.SSLContext | None = None,
        implicit: ssl.SSLContext | None = None,
        require_auth: bool = True,
    ) -> None:
        self.wire = _Wire()
        self.handler = SinkHandler(Behaviour())
        kwargs: dict[str, Any] = {
            "authenticator": _authenticator,
            "auth_required": require_auth,
            # Without TLS AUTH is still offered: the client alone must refuse to send credentials in the clear.
            "auth_require_tls": starttls is not None,
        }
        if starttls is not None:
            kwargs["tls_context"] = starttls
        if implicit is not None:
            kwargs["ssl_context"] = implicit
        self.controller = _RelayController(
            self.wire,
            self.handler,
            hostname=address,
            port=port,
            server_hostname="relay.test",
            ready_timeout=10,
            **kwargs,
        )

    @property
    def received(self) -> list[Received]:
        return self.handler.received

    def plaintext(self) -> bytes:
        """Every byte clients sent outside TLS."""
        return self.wire.sent(tls=False)

    def commands(self, tls: bool) -> list[str]:
        """The command verbs clients sent with TLS on (or off)."""
        lines = self.wire.sent(tls).split(b"\r\n")
        return [line.split(b" ", 1)[0].decode(errors="replace").upper() for line in lines if line]

    def start(self) -> RelayHost:
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.stop()
