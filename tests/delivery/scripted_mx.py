"""An aiosmtpd MX on 127.x.y.z:25 whose refusals are raw bytes (any encoding) at MAIL, RCPT, DATA or the final dot,
or that tarpits the final dot (one byte of its reply every half second, never a whole line)."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP


@dataclass
class Script:
    mail: bytes | None = None  # the reply to MAIL FROM (a refusal)
    rcpt: dict[str, bytes] = field(default_factory=dict)  # address → the reply to its RCPT TO (a refusal)
    data_command: bytes | None = None  # the reply to the DATA command itself (a refusal, before any content)
    final_dot: bytes | None = None  # the reply to the final dot, instead of 250
    tarpit: bool = False  # the final dot answered one byte at a time, never finished


class ScriptedHandler:
    def __init__(self, script: Script) -> None:
        self.script = script
        self.received: list[tuple[list[str], bytes]] = []  # (recipients, content) of each 250 at the final dot
        self.tarpitted = 0  # sessions held at the final dot
        self.lock = threading.Lock()

    async def handle_MAIL(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> Any:
        if self.script.mail is not None:
            return self.script.mail
        envelope.mail_from = address
        return "250 2.1.0 OK"

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> Any:
        reply = self.script.rcpt.get(address.lower())
        if reply is not None:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> Any:
        if self.script.tarpit:
            with self.lock:
                self.tarpitted += 1
            writer = server._writer
            # "250 ..." one byte every half second, never the line end: the client's deadline has to end it.
            for byte in b"250 2.0.0 slowly " * 1000:
                if writer.is_closing():
                    break
                writer.write(bytes([byte]))
                await asyncio.sleep(0.5)
            return b"250 2.0.0 too late"
        if self.script.final_dot is not None:
            return self.script.final_dot
        with self.lock:
            self.received.append((list(envelope.rcpt_tos), bytes(envelope.original_content)))
        return "250 2.0.0 Ok: queued"


class ScriptedSMTP(SMTP):
    """aiosmtpd's server with one more seam: a scripted reply to the DATA command itself (aiosmtpd has no hook
    there; its handle_DATA runs after the content)."""

    async def smtp_DATA(self, arg: str) -> None:
        script = self.event_handler.script
        if script.data_command is not None and self.envelope is not None and self.envelope.rcpt_tos:
            await self.push(script.data_command)
            return
        await super().smtp_DATA(arg)


class _Controller(Controller):
    def factory(self) -> SMTP:
        return ScriptedSMTP(self.handler, **self.SMTP_kwargs)


class ScriptedMX:
    """One scripted SMTP server on `address`:25; `received` lists what it accepted."""

    def __init__(self, address: str, script: Script, port: int = 25) -> None:
        self.handler = ScriptedHandler(script)
        self.controller = _Controller(
            self.handler, hostname=address, port=port, server_hostname="scripted.test", ready_timeout=10
        )

    @property
    def received(self) -> list[tuple[list[str], bytes]]:
        return self.handler.received

    def start(self) -> ScriptedMX:
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.stop()
