"""A scriptable hostile MX: an asyncio SMTP server that misbehaves at byte level, and records what it received.

Not aiosmtpd, so it can say anything: no or slow greetings, replies in Latin-1, thousands of reply lines of many
KiB, replies dribbled a few bytes per packet, codes that are not SMTP codes, STARTTLS advertised and then a
broken handshake, a hang-up after DATA or after the final dot before the reply, and a scripted answer per
recipient. Each connection follows a `Script`: the n-th connection the n-th of the list (the last one repeats),
so "fail once, then accept" is two scripts.

What it got is in `transactions`: every DATA it read to the final dot, with the reply it gave (None when it hung
up instead). Only a transaction answered 2xx counts as delivered; `accepted()` lists those, to count copies.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from tests.helpers import free_port

T = TypeVar("T")

# Points of a session at which a script can hang up (close) or hang (keep the socket open, say nothing more).
POINTS = ("connect", "ehlo", "mail", "rcpt", "data", "dot")
LINE_LIMIT = 1 << 20


def multiline(code: int, lines: int, width: int, text: bytes = b"x") -> bytes:
    """A reply of `lines` lines of `width` bytes each (code and separator included), CRLF-terminated."""
    head = str(code).encode()
    filler = (text * (width // max(1, len(text)) + 1))[: max(0, width - 4)]
    return b"".join(head + (b" " if i == lines - 1 else b"-") + filler + b"\r\n" for i in range(lines))


def latin1(text: str) -> bytes:
    """A reply line in Latin-1 (not UTF-8), CRLF-terminated: `latin1("550 5.1.1 Müller unknown")`."""
    return text.encode("latin-1") + b"\r\n"


@dataclass(frozen=True)
class Script:
    """How one connection behaves; every reply is raw bytes, sent as is (CRLF included)."""

    greeting: bytes = b"220 hostile.test ESMTP\r\n"
    greeting_delay: float = 0.0
    ehlo: bytes | None = None  # None: a plain capability list (with STARTTLS when `starttls` is not "none")
    # "none": not offered; "broken": offered, 220 to STARTTLS, then bytes that are not TLS and a close;
    # "abort": offered, 220, then a close; "refuse": offered, then 454.
    starttls: str = "none"
    mail: bytes = b"250 2.1.0 Ok\r\n"
    rcpt: dict[str, bytes] = field(default_factory=dict)  # lower-case address → reply
    rcpt_default: bytes = b"250 2.1.5 Ok\r\n"
    rcpt_rule: Callable[[str], bytes | None] | None = None  # for addresses not in `rcpt`; None: rcpt_default
    data: bytes = b"354 End data with <CR><LF>.<CR><LF>\r\n"
    dot: bytes = b"250 2.0.0 Ok: queued\r\n"
    hang_up_at: str | None = None  # one of POINTS: close there without replying
    hang_at: str | None = None  # one of POINTS: say nothing more there, keep the socket open
    split: int = 0  # > 0: every reply goes out this many bytes at a time, each piece on its own
    split_pause: float = 0.01

    def rcpt_reply(self, address: str) -> bytes:
        reply = self.rcpt.get(address.lower())
        if reply is None and self.rcpt_rule is not None:
            reply = self.rcpt_rule(address)
        return reply if reply is not None else self.rcpt_default


@dataclass
class Transaction:
    """One DATA read to its final dot: who from, to whom (the recipients answered 2xx), what, and our reply."""

    connection: int
    mail_from: str
    recipients: list[str]
    data: bytes
    reply: bytes | None  # None: we hung up (or hung) instead of replying

    @property
    def accepted(self) -> bool:
        return self.reply is not None and self.reply[:1] == b"2"


class _Closed(Exception):
    """The script says: end this session here."""


class HostileMX:
    """An SMTP server on `address`:`port` (a 127.x address of the test) following `scripts`, in its own thread."""

    def __init__(self, address: str, scripts: Script | list[Script] | None = None, port: int = 0) -> None:
        self.address = address
        self.port = port or free_port(address)
        self.scripts = scripts if isinstance(scripts, list) else [scripts or Script()]
        self.connections = 0
        self.transactions: list[Transaction] = []
        self.commands: list[list[bytes]] = []  # per connection, every command line as received
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True, name=f"hostile-mx-{address}")
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def route(self) -> str:
        """This server as a POSTROOM_TRANSPORT_MAP / POSTROOM_RELAY_HOST next hop (`[address]:port`, no MX)."""
        return f"[{self.address}]:{self.port}"

    def start(self) -> HostileMX:
        self._thread.start()
        self._call(self._start())
        return self

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.address, self.port, limit=LINE_LIMIT)

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        self._call(self._stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    async def _stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()

    def set_scripts(self, scripts: Script | list[Script]) -> None:
        """Follow other scripts from the next connection on (counting restarts from there)."""
        with self._lock:
            self.scripts = scripts if isinstance(scripts, list) else [scripts]
            self._first = self.connections

    def __enter__(self) -> HostileMX:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    # -- what was received ----------------------------------------------------------------------------------------
    def accepted(self) -> list[Transaction]:
        with self._lock:
            return [t for t in self.transactions if t.accepted]

    def copies(self, needle: bytes) -> int:
        """How many accepted transactions carried a message containing `needle` (one per recipient)."""
        return sum(len(t.recipients) for t in self.accepted() if needle in t.data)

    # -- the session ------------------------------------------------------------------------------------------------
    _first = 0

    def _script_for(self, number: int) -> Script:
        with self._lock:
            index = min(number - self._first, len(self.scripts) - 1)
            return self.scripts[max(0, index)]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with self._lock:
            number = self.connections
            self.connections += 1
            self.commands.append([])
        script = self._script_for(number)
        sock = writer.transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._writers.add(writer)
        session = _Session(self, number, script, reader, writer)
        try:
            await session.run()
        except (_Closed, ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            self._writers.discard(writer)
            writer.transport.abort()

    def _record(self, transaction: Transaction) -> None:
        with self._lock:
            self.transactions.append(transaction)


class _Session:
    def __init__(
        self,
        server: HostileMX,
        number: int,
        script: Script,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        self.server = server
        self.number = number
        self.script = script
        self.reader = reader
        self.writer = writer
        self.mail_from = ""
        self.recipients: list[str] = []

    async def point(self, name: str) -> None:
        """Apply the script's hang-up or hang at this point of the session."""
        if self.script.hang_up_at == name:
            raise _Closed
        if self.script.hang_at == name:
            # Read and discard until the client gives up; never answer.
            while await self.reader.read(65536):
                pass
            raise _Closed

    async def send(self, reply: bytes) -> None:
        step = self.script.split
        if step <= 0:
            self.writer.write(reply)
            await self.writer.drain()
            return
        for start in range(0, len(reply), step):
            self.writer.write(reply[start : start + step])
            await self.writer.drain()
            await asyncio.sleep(self.script.split_pause)

    async def run(self) -> None:
        script = self.script
        await self.point("connect")
        if script.greeting_delay:
            await asyncio.sleep(script.greeting_delay)
        await self.send(script.greeting)
        while True:
            line = await self.reader.readuntil(b"\n")
            self.server.commands[self.number].append(line)
            verb, _, arg = line.rstrip(b"\r\n").partition(b" ")
            await self.command(verb.upper(), arg.decode("latin-1"))

    async def command(self, verb: bytes, arg: str) -> None:
        script = self.script
        if verb in (b"EHLO", b"HELO"):
            await self.point("ehlo")
            await self.send(self.ehlo() if verb == b"EHLO" else b"250 hostile.test\r\n")
        elif verb == b"STARTTLS":
            await self.starttls()
        elif verb == b"MAIL":
            await self.point("mail")
            self.mail_from, self.recipients = _path(arg), []
            await self.send(script.mail)
        elif verb == b"RCPT":
            await self.point("rcpt")
            address = _path(arg)
            reply = script.rcpt_reply(address)
            if reply[:1] == b"2":
                self.recipients.append(address)
            await self.send(reply)
        elif verb == b"DATA":
            await self.point("data")
            await self.send(script.data)
            if script.data[:1] == b"3":
                await self.read_message()
        elif verb == b"RSET":
            self.mail_from, self.recipients = "", []
            await self.send(b"250 2.0.0 Ok\r\n")
        elif verb == b"NOOP":
            await self.send(b"250 2.0.0 Ok\r\n")
        elif verb == b"QUIT":
            await self.send(b"221 2.0.0 Bye\r\n")
            raise _Closed
        else:
            await self.send(b"502 5.5.2 Error: command not recognized\r\n")

    def ehlo(self) -> bytes:
        if self.script.ehlo is not None:
            return self.script.ehlo
        lines = [b"hostile.test", b"PIPELINING", b"SIZE 104857600", b"8BITMIME", b"SMTPUTF8"]
        if self.script.starttls != "none":
            lines.append(b"STARTTLS")
        return b"".join(b"250" + (b" " if i == len(lines) - 1 else b"-") + x + b"\r\n" for i, x in enumerate(lines))

    async def starttls(self) -> None:
        mode = self.script.starttls
        if mode == "none":
            await self.send(b"502 5.5.1 STARTTLS not offered\r\n")
        elif mode == "refuse":
            await self.send(b"454 4.7.0 TLS not available due to temporary reason\r\n")
        else:
            await self.send(b"220 2.0.0 Ready to start TLS\r\n")
            if mode == "broken":
                # Not a TLS record: the client's handshake fails on the first bytes it reads.
                self.writer.write(b"HTTP/1.0 400 Bad Request\r\n\r\nthis is not TLS\r\n")
                await self.writer.drain()
            raise _Closed

    async def read_message(self) -> None:
        lines: list[bytes] = []
        while True:
            line = await self.reader.readuntil(b"\r\n")
            if line == b".\r\n":
                break
            lines.append(line[1:] if line.startswith(b".") else line)
        data = b"".join(lines)
        transaction = Transaction(self.number, self.mail_from, list(self.recipients), data, None)
        try:
            await self.point("dot")
        except _Closed:
            self.server._record(transaction)
            raise
        self.server._record(replace(transaction, reply=self.script.dot))
        await self.send(self.script.dot)
        self.mail_from, self.recipients = "", []


def _path(arg: str) -> str:
    """The address in `FROM:<a@b> SIZE=1` / `TO:<a@b>`."""
    start, end = arg.find("<"), arg.find(">")
    return arg[start + 1 : end] if 0 <= start < end else arg.partition(":")[2].strip()
