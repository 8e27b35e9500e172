"""Helpers of the migration tests: the `postroom` CLI in-process, a POP3 server over the test's store."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

from click.testing import CliRunner, Result

from services.pop3.server import Pop3Server
from services.pop3.state import ServerContext
from services.store import Store
from services.store.cli import cli
from shared.tls import server_context
from tests.dovecot import pop3_messages
from tests.harness import settings_for

DOMAIN = "migrate.test"
PASSWORD = "postroom-test-password"

Postroom = Callable[..., Result]


def postroom_cli(namespace: str, store_env: dict[str, str]) -> Postroom:
    """`postroom …` in this process, against the test's namespace on the store of `store_env`."""
    runner = CliRunner()

    def invoke(*args: str, **env: str) -> Result:
        # A thread of its own: the CLI runs its own event loop (asyncio.run), the async tests already have one.
        environ = {"POSTROOM_NAMESPACE": namespace, **store_env, **env}
        with ThreadPoolExecutor(1) as pool:
            return pool.submit(runner.invoke, cli, list(args), env=environ).result()

    return invoke


@asynccontextmanager
async def postroom_pop3(namespace: str, store: Store) -> AsyncIterator[int]:
    """Postroom's POP3 server on a free loopback port; yields the port."""
    settings = settings_for("pop3", namespace)
    ctx = ServerContext(
        settings=settings,
        store=store,
        tls_context=server_context(None, None, "pop.postroom.test"),
        throttle=store.login_throttle(0, 1),
    )
    server = Pop3Server(ctx)
    await server.start()
    try:
        yield server.ports["pop3"]
    finally:
        await server.stop(grace=1)


async def postroom_messages(port: int, user: str) -> list[tuple[str, bytes]]:
    return await asyncio.to_thread(pop3_messages, port, user, PASSWORD)
