"""An aiosmtpd sink on 127.x.y.z:25 that advertises DSN (RFC 3461) and records the MAIL and RCPT arguments."""

from __future__ import annotations

import re
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP

_DSN_PARAMETER = re.compile(r" (?:RET|ENVID|NOTIFY|ORCPT)=\S+", re.IGNORECASE)


class DSNHandler:
    def __init__(self) -> None:
        self.commands: list[str] = []  # "MAIL <arg>" and "RCPT <arg>", as received
        self.received: list[tuple[list[str], bytes]] = []

    async def handle_EHLO(self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]) -> Any:
        session.host_name = hostname
        return [*responses[:-1], "250-DSN", responses[-1]]

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.received.append((list(envelope.rcpt_tos), bytes(envelope.original_content)))
        return "250 2.0.0 Ok: queued"


class DSNSMTP(SMTP):
    """aiosmtpd, which knows no DSN parameter: they are recorded, then taken off before its MAIL and RCPT."""

    async def smtp_MAIL(self, arg: str) -> None:
        self.event_handler.commands.append(f"MAIL {arg}")
        await super().smtp_MAIL(_DSN_PARAMETER.sub("", arg or ""))

    async def smtp_RCPT(self, arg: str) -> None:
        self.event_handler.commands.append(f"RCPT {arg}")
        await super().smtp_RCPT(_DSN_PARAMETER.sub("", arg or ""))


class _Controller(Controller):
    def factory(self) -> SMTP:
        return DSNSMTP(self.handler, **self.SMTP_kwargs)


class DSNSink:
    def __init__(self, address: str, port: int = 25) -> None:
        self.handler = DSNHandler()
        self.controller = _Controller(
            self.handler, hostname=address, port=port, server_hostname="dsn.test", ready_timeout=10
        )

    def start(self) -> DSNSink:
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.stop()
