"""Store test fixtures: the admin API served from a thread of its own (so sync HTTP clients and fuzzers can call it)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from services.store import Store
from services.store.api import AdminServer, create_app
from services.store.queue_ops import QueueOps
from shared.netaddr import HostPort
from tests.helpers import AMQP_URL, REDIS_URL

TOKEN = "test-token"
# Retry steps whose delay queues tests/conftest.py's namespace cleanup removes (60 s and 300 s).
TEST_DELAYS = [60, 300]


class AdminThread:
    """The admin application on a free loopback port, run by an event loop in a background thread."""

    def __init__(
        self,
        namespace: str,
        token: str | None = TOKEN,
        redis_url: str = REDIS_URL,
        amqp_url: str = AMQP_URL,
        cluster: bool = False,
    ) -> None:
        self.cluster = cluster
        self.namespace = namespace
        self.token = token
        self.redis_url = redis_url
        self.amqp_url = amqp_url
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def _run(self) -> None:
        self._loop.run_until_complete(self._main())

    async def _main(self) -> None:
        try:
            store = Store.connect(self.redis_url, self.namespace, self.cluster, socket_connect_timeout=2)
            queue = QueueOps(self.amqp_url, self.namespace, TEST_DELAYS)
            server = AdminServer(create_app(store, self.token, queue), HostPort("127.0.0.1", 0))
            await server.start()
            self.port = server.port
            self._stop = asyncio.Event()
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            raise
        self._ready.set()
        await self._stop.wait()
        await server.stop()
        await queue.close()
        await store.close()

    def start(self) -> AdminThread:
        self._thread.start()
        assert self._ready.wait(20), "admin API did not start"
        if self._error is not None:
            raise self._error
        return self

    def stop(self) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(20)


@pytest.fixture(params=["redis", "cluster"])
def store_env(request: pytest.FixtureRequest) -> dict[str, str]:
    """Where the store of this test lives: the shared single Redis, or the session's private Redis Cluster."""
    if request.param == "cluster":
        cluster = request.getfixturevalue("redis_cluster")
        return {"POSTROOM_REDIS_URL": cluster.url, "POSTROOM_REDIS_CLUSTER": "true"}
    return {"POSTROOM_REDIS_URL": REDIS_URL, "POSTROOM_REDIS_CLUSTER": "false"}


@pytest.fixture
async def store(namespace: str, store_env: dict[str, str]) -> AsyncIterator[Store]:
    """The store fixture of tests/conftest.py, run once against a single Redis and once against a Redis Cluster."""
    handle = Store.connect(
        store_env["POSTROOM_REDIS_URL"], namespace, cluster=store_env["POSTROOM_REDIS_CLUSTER"] == "true"
    )
    yield handle
    await handle.close()


@pytest.fixture
def admin_factory(namespace: str) -> Iterator[Callable[..., AdminThread]]:
    started: list[AdminThread] = []

    def start(**kwargs: Any) -> AdminThread:
        admin = AdminThread(namespace, **kwargs).start()
        started.append(admin)
        return admin

    yield start
    for admin in started:
        admin.stop()


@pytest.fixture
def admin(admin_factory: Callable[..., AdminThread]) -> AdminThread:
    return admin_factory()
