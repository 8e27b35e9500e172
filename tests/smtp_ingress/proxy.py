"""A TCP proxy the tests switch on and cut, to take the broker away from one service without touching RabbitMQ."""

from __future__ import annotations

import asyncio
import contextlib
import threading

from tests.helpers import AMQP_URL, free_port

AMQP_PORT = int(AMQP_URL.rsplit(":", 1)[1].split("/")[0])


class TcpProxy:
    """Listens on a free loopback port; while enabled, pipes each connection to the target, else drops it."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self.enabled = False
        # Cleared: bytes are held and connections stay open, as with a stalled broker. Lives on the proxy's loop.
        self.flowing = asyncio.Event()
        self.flowing.set()
        # When set: how many more bytes may go towards the target before the proxy stalls (see stall_after).
        self.budget: int | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None

    def __enter__(self) -> TcpProxy:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    @property
    def amqp_url(self) -> str:
        """The test broker's URL, through this proxy (for a proxy made by `broker_proxy`)."""
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    def start(self) -> TcpProxy:
        self._thread.start()
        self._call(self._start())
        return self

    def _call(self, coro: object) -> object:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)  # type: ignore[arg-type]

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.enabled:
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self._writers.update((writer, up_writer))

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, upstream: bool) -> None:
            with contextlib.suppress(Exception):
                while data := await src.read(65536):
                    while data:
                        await self.flowing.wait()
                        part, data = data, b""
                        if upstream and self.budget is not None:
                            part, data = part[: self.budget], part[self.budget :]
                            self.budget -= len(part)
                            if not self.budget:
                                self.flowing.clear()
                        dst.write(part)
                        await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer, True), pipe(up_reader, writer, False))
        self._writers.difference_update((writer, up_writer))

    def stall(self) -> None:
        self._loop.call_soon_threadsafe(self.flowing.clear)

    def stall_after(self, count: int) -> None:
        """Let `count` more bytes through towards the target, then stall (e.g. part of a message's frames)."""

        def limit() -> None:
            self.budget = count

        self._loop.call_soon_threadsafe(limit)

    def stalled(self) -> bool:
        """True once a stall_after budget is used up."""
        return self.budget == 0

    def resume(self) -> None:
        def go() -> None:
            self.budget = None
            self.flowing.set()

        self._loop.call_soon_threadsafe(go)

    def enable(self) -> None:
        self.enabled = True

    def cut(self) -> None:
        """Stop forwarding and drop every open connection (both directions), as a broker crash would."""
        self.enabled = False

        async def drop() -> None:
            for writer in list(self._writers):
                writer.transport.abort()
            self._writers.clear()

        self._call(drop())

    def stop(self) -> None:
        self.cut()

        async def close() -> None:
            if self._server is not None:
                self._server.close()

        self._call(close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


def broker_proxy(enabled: bool = True) -> TcpProxy:
    """A started proxy in front of the test RabbitMQ (forwarding unless `enabled` is false); stop it, or use it in a
    `with` block."""
    proxy = TcpProxy("127.0.0.1", AMQP_PORT).start()
    if enabled:
        proxy.enable()
    return proxy
