"""Store test fixtures: the admin API on a loop thread of its own (so sync HTTP clients and fuzzers can call it), the
store against a single Redis and a Redis Cluster."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from services.store import Store
from tests.harness import ADMIN_TOKEN, Harness, OnThread
from tests.helpers import REDIS_URL

TOKEN = ADMIN_TOKEN
# The in-process store's retry steps (tests/harness.py), whose delay queues the namespace cleanup removes.
TEST_DELAYS = [60, 300]


@dataclass
class AdminAPI:
    """The admin API of an in-process store (tests/harness.py) on a loop thread, and the token it asks for."""

    service: OnThread
    token: str | None = TOKEN

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.service.port('admin')}"

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def start_admin(harness: Harness, token: str | None = TOKEN, cluster: bool = False, **settings: Any) -> AdminAPI:
    """Not waiting for readiness: a test may point it at a Redis or broker that is not there."""
    service = harness.thread("store", wait_ready=False, admin_token=token, redis_cluster=cluster, **settings)
    return AdminAPI(service, token)


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
def admin_factory(harness: Harness) -> Callable[..., AdminAPI]:
    """Start the admin API: `token`, `cluster`, `redis_url`, `amqp_url` and other store settings."""

    def start(**kwargs: Any) -> AdminAPI:
        return start_admin(harness, **kwargs)

    return start


@pytest.fixture
def admin(admin_factory: Callable[..., AdminAPI]) -> AdminAPI:
    return admin_factory()
