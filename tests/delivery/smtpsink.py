"""SMTP sinks (aiosmtpd) on 127.x.y.z port 25 that accept, reject with 5xx, or defer with 4xx before accepting."""

from __future__ import annotations

import ssl
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP

from shared.tls import self_signed_pair


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    content: bytes
    helo: str
    tls: bool
    auth: str | None


@dataclass
class Behaviour:
    reject: set[str] = field(default_factory=set)  # RCPT → 550 5.1.1
    defer: set[str] = field(default_factory=set)  # RCPT → 450 4.2.1
    defer_data: int = 0  # the first N DATA commands → 451 4.3.0
    reject_data: bool = False  # DATA → 554 5.7.1


class SinkHandler:
    def __init__(self, behaviour: Behaviour) -> None:
        self.behaviour = behaviour
        self.received: list[Received] = []
        self.lock = threading.Lock()

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        if address.lower() in self.behaviour.reject:
            return f"550 5.1.1 <{address}>: Recipient address rejected: no such user"
        if address.lower() in self.behaviour.defer:
            return f"450 4.2.1 <{address}>: Recipient temporarily unavailable"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self.lock:
            if self.behaviour.reject_data:
                return "554 5.7.1 Message content rejected"
            if self.behaviour.defer_data > 0:
                self.behaviour.defer_data -= 1
                return "451 4.3.0 Temporary local problem, try again"
            login = session.auth_data
            self.received.append(
                Received(
                    envelope.mail_from,
                    list(envelope.rcpt_tos),
                    bytes(envelope.original_content),
                    session.host_name,
                    session.ssl is not None,
                    login.decode() if isinstance(login, bytes) else login,
                )
            )
        return "250 2.0.0 Ok: queued"


class Sink:
    """One SMTP server on `address`:25 (or another port); `received` lists what it accepted."""

    def __init__(
        self,
        address: str,
        behaviour: Behaviour | None = None,
        port: int = 25,
        tls_dir: Path | None = None,
        smtputf8: bool = True,
    ) -> None:
        self.handler = SinkHandler(behaviour or Behaviour())
        kwargs: dict[str, Any] = {"enable_SMTPUTF8": smtputf8}
        if tls_dir is not None:
            cert, key = self_signed_pair("sink.test", tls_dir)
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(cert, key)
            kwargs["tls_context"] = context
        self.controller = Controller(
            self.handler, hostname=address, port=port, server_hostname="sink.test", ready_timeout=10, **kwargs
        )
        self.address = address
        self.port = port

    @property
    def received(self) -> list[Received]:
        return self.handler.received

    def start(self) -> Sink:
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.stop()


__all__ = ["SMTP", "Behaviour", "Received", "Sink"]
