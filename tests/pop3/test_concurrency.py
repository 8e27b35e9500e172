"""Many sessions at once: one winner per maildrop, independent mailboxes, deliveries racing with UPDATE."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

from services.pop3 import replies
from services.pop3.server import Pop3Server
from services.store import Store
from tests.pop3.conftest import PASSWORD, USER, Client, deliver, message


async def test_one_session_wins_the_maildrop(pop3: Pop3Server, account: str, store: Store) -> None:
    await deliver(store, message("contended"))
    clients = await asyncio.gather(*(Client.connect(pop3.ports["pop3"]) for _ in range(12)))
    results = await asyncio.gather(*(client.login() for client in clients))
    winners = [r for r in results if r.startswith("+OK")]
    assert len(winners) == 1
    assert results.count("-ERR " + replies.ERR_IN_USE.text) == 11
    for client in clients:
        await client.close()


async def test_parallel_sessions_on_many_mailboxes(pop3: Pop3Server, store: Store) -> None:
    await store.accounts.add_domain("pop.test")
    users = [f"user{i}@pop.test" for i in range(15)]
    for user in users:
        await store.accounts.add_user(user, PASSWORD)
        await deliver(store, *(message(f"{user} {n}") for n in range(4)), address=user)

    async def drain_mailbox(user: str) -> int:
        client = await Client.connect(pop3.ports["pop3"])
        assert (await client.login(user)).startswith("+OK Maildrop has 4 messages")
        for n in range(1, 5):
            assert (await client.cmd(f"RETR {n}")).startswith("+OK")
            assert f"Subject: {user} {n - 1}".encode() in await client.raw_multiline()
            assert (await client.cmd(f"DELE {n}")).startswith("+OK")
        reply = await client.cmd("QUIT")
        await client.close()
        return len(reply)

    await asyncio.gather(*(drain_mailbox(user) for user in users))
    for user in users:
        assert await store.mailboxes.snapshot(user) == []


async def test_delivery_during_session_survives_update(pop3: Pop3Server, account: str, store: Store) -> None:
    await deliver(store, *(message(f"old {i}") for i in range(5)))
    client = await Client.connect(pop3.ports["pop3"])
    assert (await client.login()).startswith("+OK Maildrop has 5")
    late = deliver(store, *(message(f"new {i}") for i in range(20)))
    deletes = [client.cmd(f"DELE {n}") for n in range(1, 6)]
    new_uids, *_ = await asyncio.gather(late, _sequential(deletes))
    assert (await client.cmd("QUIT")).startswith("+OK")
    assert [m.uid for m in await store.mailboxes.snapshot(USER)] == new_uids


async def _sequential(commands: list[Coroutine[Any, Any, str]]) -> list[str]:
    return [await command for command in commands]
