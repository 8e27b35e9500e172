"""A TCP proxy between a service and RabbitMQ or Redis that the test switches between faults.

It runs on an event loop in a thread of its own, so blocking tests and async tests drive it alike; every control
method returns once the proxy's loop has applied it. What it can do, on command:

- pass bytes through (`pass_through`), or `delay` each chunk in one direction or both;
- `stall` (hold bytes, sockets open, until `resume`) or `blackhole` (drop bytes, sockets open);
- `cut` every open connection (close both sides) or `reset` it (an RST on both sides: SO_LINGER 0), refusing new
  connections until `enable`;
- `after(n, direction, action)`: let n more bytes through in that direction, then cut, reset, blackhole or stall
  (at the exact byte: part of a frame, an ack, a reply);
- `on(pattern, direction, action)`: the same at the first chunk holding `pattern` (an AMQP Basic.Ack or
  Basic.Publish, a Redis EVALSHA), with the chunk lost or, with `forward`, delivered first.

`refuse()`/`enable()` decide whether new connections are accepted (refused ones are closed at once).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import socket
import struct
import threading
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from tests.helpers import AMQP_URL, REDIS_URL, free_port

T = TypeVar("T")
CHUNK = 65536


class Direction(enum.Enum):
    UP = "up"  # from the service (client) to the server
    DOWN = "down"  # from the server to the service
    BOTH = "both"

    def covers(self, direction: Direction) -> bool:
        return self is Direction.BOTH or self is direction


class Action(enum.Enum):
    CUT = "cut"
    RESET = "reset"
    BLACKHOLE = "blackhole"
    STALL = "stall"


@dataclass
class _Trigger:
    direction: Direction
    remaining: int
    action: Action
    pattern: bytes | None = None  # fire on the first chunk holding these bytes (instead of after `remaining`)
    forward: bool = False  # with a pattern: forward the matching chunk before acting (else it is held or lost)


@dataclass(eq=False)
class _Pair:
    """One proxied connection: the service's side and the server's side."""

    client: asyncio.StreamWriter
    server: asyncio.StreamWriter
    blackholed: bool = False  # a trigger's BLACKHOLE: this connection alone drops everything, both ways

    def writers(self) -> tuple[asyncio.StreamWriter, asyncio.StreamWriter]:
        return self.client, self.server


class FaultProxy:
    """Listens on a free loopback port and pipes each connection to `target`; see the module docstring."""

    def __init__(self, target_host: str, target_port: int, listen_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.host = listen_host
        self.port = free_port(listen_host)
        self.accepting = False
        self.bytes = {Direction.UP: 0, Direction.DOWN: 0}  # forwarded so far
        self.dropped = {Direction.UP: 0, Direction.DOWN: 0}  # blackholed so far
        self.connections_made = 0
        self.fired: list[Action] = []  # the triggers that went off, in order
        self._delay = {Direction.UP: 0.0, Direction.DOWN: 0.0}
        self._blackhole = {Direction.UP: False, Direction.DOWN: False}
        self._trigger: _Trigger | None = None
        self._pairs: set[_Pair] = set()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True, name=f"fault-proxy-{self.port}")
        self._server: asyncio.Server | None = None
        self._flowing: asyncio.Event | None = None

    # -- life cycle -------------------------------------------------------------------------------------------------
    def start(self, accepting: bool = True) -> FaultProxy:
        self._thread.start()
        self._call(self._start())
        self.accepting = accepting
        return self

    async def _start(self) -> None:
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server = await asyncio.start_server(self._handle, self.host, self.port)

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        self.refuse()
        self._call(self._close_all(Action.CUT))
        self._call(self._stop_server())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    async def _stop_server(self) -> None:
        if self._server is not None:
            self._server.close()
        self._flowing_event().set()

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    # -- addresses ------------------------------------------------------------------------------------------------
    def url(self, url: str) -> str:
        """`url` (amqp://, redis://) with its host and port replaced by the proxy's."""
        parts = urlsplit(url)
        userinfo = parts.netloc.rpartition("@")[0]
        netloc = f"{userinfo}@{self.host}:{self.port}" if userinfo else f"{self.host}:{self.port}"
        return urlunsplit(parts._replace(netloc=netloc))

    @property
    def amqp_url(self) -> str:
        """The test broker's URL through this proxy (for a proxy made by `broker_proxy`)."""
        return self.url(AMQP_URL)

    @property
    def redis_url(self) -> str:
        """The test Redis's URL through this proxy (for a proxy made by `redis_proxy`)."""
        return self.url(REDIS_URL)

    @property
    def open_connections(self) -> int:
        return len(self._pairs)

    # -- commands -------------------------------------------------------------------------------------------------
    def enable(self) -> None:
        """Accept new connections again (after `cut`, `reset` or `refuse`)."""
        self.accepting = True

    def refuse(self) -> None:
        """Close new connections at once (the server looks down); open ones are left as they are."""
        self.accepting = False

    def pass_through(self) -> None:
        """Heal everything: accept, no delay, no blackhole, no pending trigger, held bytes flow."""

        def heal() -> None:
            self.accepting = True
            self._delay = {Direction.UP: 0.0, Direction.DOWN: 0.0}
            self._blackhole = {Direction.UP: False, Direction.DOWN: False}
            self._trigger = None
            self._flowing_event().set()

        self._apply(heal)

    def delay(self, seconds: float, direction: Direction = Direction.BOTH) -> None:
        """Hold each chunk `seconds` before forwarding it (order kept), as a slow link would."""

        def apply() -> None:
            for each in (Direction.UP, Direction.DOWN):
                if direction.covers(each):
                    self._delay[each] = seconds

        self._apply(apply)

    def blackhole(self, direction: Direction = Direction.BOTH) -> None:
        """Drop every byte in `direction` from now on; sockets stay open, so only timeouts notice."""

        def apply() -> None:
            for each in (Direction.UP, Direction.DOWN):
                if direction.covers(each):
                    self._blackhole[each] = True

        self._apply(apply)

    def stall(self) -> None:
        """Hold every byte (both directions, sockets open) until `resume`."""
        self._apply(self._flowing_event().clear)

    def resume(self) -> None:
        """Let held bytes flow again; a pending `after` trigger is dropped."""

        def go() -> None:
            self._trigger = None
            self._flowing_event().set()

        self._apply(go)

    def cut(self) -> None:
        """Close both sides of every open connection (as a crashed peer's kernel would) and refuse new ones."""
        self.refuse()
        self._call(self._close_all(Action.CUT))

    def reset(self) -> None:
        """Reset every open connection (RST on both sides) and refuse new ones."""
        self.refuse()
        self._call(self._close_all(Action.RESET))

    def after(self, count: int, direction: Direction, action: Action) -> None:
        """Let `count` more bytes through in `direction` (UP or DOWN), then do `action` to the connection carrying
        them (CUT, RESET, BLACKHOLE: both ways, that connection only) or to every connection (STALL)."""
        if direction is Direction.BOTH:
            raise ValueError("a trigger counts the bytes of one direction")

        def arm() -> None:
            self._trigger = _Trigger(direction, count, action)

        self._apply(arm)

    def on(self, pattern: bytes, direction: Direction, action: Action, forward: bool = False) -> None:
        """On the first chunk in `direction` (UP or DOWN) that holds `pattern` (an AMQP method's class and method
        ids, a Redis command name), do `action` to the connection carrying it: CUT or RESET it, BLACKHOLE it (both
        ways, that connection only), or STALL everything. The chunk is lost (held, for STALL) unless `forward`,
        which sends it on first: e.g. a command that reaches the server whose reply then never comes back."""
        if direction is Direction.BOTH:
            raise ValueError("a trigger watches one direction")

        def arm() -> None:
            self._trigger = _Trigger(direction, 0, action, pattern, forward)

        self._apply(arm)

    def stall_after(self, count: int) -> None:
        """Let `count` more bytes through towards the server, then stall (e.g. part of a message's frames)."""
        self.after(count, Direction.UP, Action.STALL)

    def triggered(self) -> bool:
        """True once the armed `after` trigger went off."""
        return self._trigger is None and bool(self.fired)

    def stalled(self) -> bool:
        """True once a stall_after budget is used up."""
        return bool(self.fired) and self.fired[-1] is Action.STALL and not self._flowing_event().is_set()

    # -- the loop's side ------------------------------------------------------------------------------------------
    def _flowing_event(self) -> asyncio.Event:
        assert self._flowing is not None
        return self._flowing

    def _apply(self, change: Any) -> None:
        async def run() -> None:
            change()

        self._call(run())

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.accepting:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target, limit=CHUNK)
        except OSError:
            writer.transport.abort()
            return
        self.connections_made += 1
        pair = _Pair(writer, up_writer)
        self._pairs.add(pair)
        try:
            await asyncio.gather(
                self._pipe(pair, reader, up_writer, Direction.UP), self._pipe(pair, up_reader, writer, Direction.DOWN)
            )
        finally:
            self._pairs.discard(pair)

    async def _pipe(
        self, pair: _Pair, source: asyncio.StreamReader, sink: asyncio.StreamWriter, direction: Direction
    ) -> None:
        tail = b""  # the end of what came before, so a pattern split between two reads is still seen
        with contextlib.suppress(Exception):
            while data := await source.read(CHUNK):
                while data:
                    await self._flowing_event().wait()
                    if self._delay[direction]:
                        await asyncio.sleep(self._delay[direction])
                    part, data = data, b""
                    trigger = self._trigger
                    fire = False
                    if trigger is not None and trigger.direction is direction:
                        if trigger.pattern is None:
                            part, data = part[: trigger.remaining], part[trigger.remaining :]
                            trigger.remaining -= len(part)
                            fire = trigger.remaining == 0
                        elif trigger.pattern in tail + part:
                            fire = True
                            if not trigger.forward:
                                part, data = b"", part  # held back: lost with the connection, or kept by STALL
                    tail = (tail + part)[-64:]
                    if self._blackhole[direction] or pair.blackholed:
                        self.dropped[direction] += len(part)
                    elif part:
                        sink.write(part)
                        self.bytes[direction] += len(part)
                        await sink.drain()
                    if fire and trigger is self._trigger:
                        assert trigger is not None
                        self._trigger = None
                        self.fired.append(trigger.action)
                        await self._fire(trigger, pair)
                        if trigger.action in (Action.CUT, Action.RESET):
                            return
        with contextlib.suppress(Exception):
            sink.close()

    async def _fire(self, trigger: _Trigger, pair: _Pair) -> None:
        if trigger.action is Action.STALL:
            self._flowing_event().clear()
        elif trigger.action is Action.BLACKHOLE:
            pair.blackholed = True
        else:
            _close(pair, trigger.action)

    async def _close_all(self, action: Action) -> None:
        for pair in list(self._pairs):
            _close(pair, action)
        self._pairs.clear()


def _close(pair: _Pair, action: Action) -> None:
    for writer in pair.writers():
        if action is Action.RESET:
            sock = writer.transport.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    # Linger on, timeout 0: close() sends RST instead of FIN (and drops unsent bytes).
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()


def _port_of(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or 0


def broker_proxy(enabled: bool = True, url: str = AMQP_URL) -> FaultProxy:
    """A started proxy in front of RabbitMQ (the test broker unless `url` says otherwise), accepting connections
    unless `enabled` is false; stop it, or use it in a `with` block."""
    return FaultProxy(*_port_of(url)).start(accepting=enabled)


def redis_proxy(enabled: bool = True, url: str = REDIS_URL) -> FaultProxy:
    """A started proxy in front of Redis (the test Redis unless `url` says otherwise)."""
    return FaultProxy(*_port_of(url)).start(accepting=enabled)


# Byte patterns of what a trigger may wait for: an AMQP 0-9-1 method frame's class and method ids (§4.2.4), and
# the Redis command the store's Lua scripts are run with.
AMQP_BASIC_PUBLISH = b"\x00\x3c\x00\x28"
AMQP_BASIC_DELIVER = b"\x00\x3c\x00\x3c"
AMQP_BASIC_ACK = b"\x00\x3c\x00\x50"
REDIS_EVALSHA = b"EVALSHA"
