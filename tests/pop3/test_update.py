"""Invariant 6 (docs/design.md): deletion only in the UPDATE state, under an exclusive, refreshed, released lock."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from services.pop3 import replies
from services.pop3.server import Pop3Server
from services.store import Store
from tests.helpers import wait_until
from tests.pop3.conftest import PASSWORD, USER, Client, StartServer, deliver, message


async def _lock_held(store: Store) -> bool:
    return bool(await store.redis.exists(store.keys.mailbox(USER).lock))


def _lock_free(store: Store) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return not await _lock_held(store)

    return check


async def test_disconnect_without_quit_deletes_nothing(pop3: Pop3Server, account: str, store: Store) -> None:
    uids = await deliver(store, message("a"), message("b"))
    client = await Client.connect(pop3.ports["pop3"])
    assert (await client.login()).startswith("+OK")
    assert (await client.cmd("DELE 1")).startswith("+OK")
    assert (await client.cmd("DELE 2")).startswith("+OK")
    await client.close()  # no QUIT
    # Released at once (the TTL is 10 s, far longer than this wait), and nothing was removed.
    await wait_until(_lock_free(store), timeout=5, what="lock released on disconnect")
    assert [m.uid for m in await store.mailboxes.snapshot(USER)] == uids


async def test_quit_in_authorization_state_deletes_nothing(pop3: Pop3Server, account: str, store: Store) -> None:
    await deliver(store, message("a"))
    client = await Client.connect(pop3.ports["pop3"])
    assert await client.cmd("QUIT") == "+OK " + replies.OK_SIGNOFF.text
    assert await client.closed()
    assert len(await store.mailboxes.snapshot(USER)) == 1


async def test_second_session_gets_in_use(pop3: Pop3Server, account: str, store: Store) -> None:
    await deliver(store, message("a"))
    first = await Client.connect(pop3.ports["pop3"])
    assert (await first.login()).startswith("+OK")
    second = await Client.connect(pop3.ports["pop3"])
    assert await second.login() == "-ERR " + replies.ERR_IN_USE.text
    # Still in AUTHORIZATION: once the first session quits, the second can log in on the same connection.
    assert (await first.cmd("QUIT")).startswith("+OK")
    # Released before the QUIT reply: no wait needed.
    assert not await _lock_held(store)
    assert (await second.login()).startswith("+OK Maildrop has 1 message")
    await second.close()
    await first.close()


async def test_autologout_deletes_nothing_and_releases(start_pop3: StartServer, account: str, store: Store) -> None:
    server = await start_pop3(pop3_autologout=0.5)
    await deliver(store, message("a"))
    client = await Client.connect(server.ports["pop3"])
    assert (await client.login()).startswith("+OK")
    assert (await client.cmd("DELE 1")).startswith("+OK")
    # RFC 1939 §3: the server closes without a reply and without entering UPDATE.
    assert await client.closed()
    await wait_until(_lock_free(store), timeout=5, what="lock released on autologout")
    assert len(await store.mailboxes.snapshot(USER)) == 1


async def test_lock_is_refreshed_while_the_session_lives(start_pop3: StartServer, account: str, store: Store) -> None:
    server = await start_pop3(pop3_lock_ttl=0.6)
    await deliver(store, message("a"), message("b"))
    client = await Client.connect(server.ports["pop3"])
    assert (await client.login()).startswith("+OK")
    lock = store.keys.mailbox(USER).lock
    refreshes = 0
    last = await store.redis.pttl(lock)

    async def refreshed_several_times() -> bool:
        nonlocal refreshes, last
        now = await store.redis.pttl(lock)
        if now > last:
            refreshes += 1
        last = now
        return refreshes >= 4  # well past the 0.6 s TTL

    await wait_until(refreshed_several_times, timeout=10, interval=0.02, what="lock refreshes")
    other = await Client.connect(server.ports["pop3"])
    assert await other.login() == "-ERR " + replies.ERR_IN_USE.text
    assert (await client.cmd("DELE 1")).startswith("+OK")
    assert (await client.cmd("QUIT")).startswith("+OK")
    assert len(await store.mailboxes.snapshot(USER)) == 1
    await other.close()


async def test_lost_lock_means_no_deletion(pop3: Pop3Server, account: str, store: Store) -> None:
    await deliver(store, message("a"))
    client = await Client.connect(pop3.ports["pop3"])
    assert (await client.login()).startswith("+OK")
    assert (await client.cmd("DELE 1")).startswith("+OK")
    # Someone else now owns the maildrop (e.g. our lock expired during a long stall and another session took it).
    await store.redis.set(store.keys.mailbox(USER).lock, "another-owner")
    assert await client.cmd("QUIT") == "-ERR " + replies.ERR_LOCK_LOST.text
    assert len(await store.mailboxes.snapshot(USER)) == 1
    assert await store.redis.get(store.keys.mailbox(USER).lock) == b"another-owner"


async def test_snapshot_at_login_and_dele_hides(pop3: Pop3Server, account: str, store: Store) -> None:
    first, second = message("first"), message("second")
    await deliver(store, first, second)
    client = await Client.connect(pop3.ports["pop3"])
    assert (await client.login()).startswith("+OK Maildrop has 2 messages")
    await deliver(store, message("arrived later"))
    assert await client.cmd("STAT") == f"+OK 2 {len(first) + len(second)}"
    assert (await client.cmd("DELE 1")).startswith("+OK")
    assert await client.cmd("STAT") == f"+OK 1 {len(second)}"
    for command in ("RETR 1", "TOP 1 0", "LIST 1", "UIDL 1"):
        assert await client.cmd(command) == "-ERR " + replies.ERR_NO_SUCH_MESSAGE.text
    assert await client.cmd("DELE 1") == "-ERR " + replies.ERR_ALREADY_DELETED.text
    assert await client.cmd("RETR 3") == "-ERR " + replies.ERR_NO_SUCH_MESSAGE.text
    _, listing = await client.multiline("LIST")
    assert listing == [f"2 {len(second)}"]
    _, uidl = await client.multiline("UIDL")
    assert [line.split()[0] for line in uidl] == ["2"]
    assert (await client.cmd("RSET")).startswith("+OK Maildrop has 2 messages")
    assert (await client.cmd("DELE 2")).startswith("+OK")
    assert await client.cmd("QUIT") == "+OK " + replies.ok_update(1).text
    remaining = await store.mailboxes.snapshot(USER)
    assert len(remaining) == 2  # "first" and the late arrival
    again = await Client.connect(pop3.ports["pop3"])
    assert (await again.login()).startswith("+OK Maildrop has 2 messages")
    await again.close()


async def test_user_removed_during_session(pop3: Pop3Server, account: str, store: Store) -> None:
    await deliver(store, message("a"), message("b"))
    client = await Client.connect(pop3.ports["pop3"])
    assert (await client.login()).startswith("+OK")
    assert (await client.cmd("DELE 2")).startswith("+OK")
    await _remove_user(store, USER)
    assert await client.cmd("RETR 1") == "-ERR " + replies.ERR_MESSAGE_GONE.text
    assert (await client.cmd("STAT")).startswith("+OK")
    reply = await client.cmd("QUIT")
    assert reply.startswith("-ERR [SYS/TEMP]") or reply.startswith("+OK")
    assert await client.closed()
    # The server is fine: a new session for an unknown user is refused the normal way.
    other = await Client.connect(pop3.ports["pop3"])
    assert await other.login() == "-ERR " + replies.ERR_AUTH_FAILED.text
    await other.close()


async def _remove_user(store: Store, address: str) -> None:
    """Remove an account and all its mailbox keys, as the admin CLI's `user remove` does (issue 6)."""
    remove = getattr(store.accounts, "remove_user", None)
    if remove is not None:
        await remove(address)
        return
    prefix = store.keys.mailbox(address).prefix
    keys = [key async for key in store.redis.scan_iter(match=f"{prefix}:*")]
    if keys:
        await store.redis.delete(*keys)
    await store.redis.srem(store.keys.users, address)


async def test_password_wrong_then_right(pop3: Pop3Server, account: str, store: Store) -> None:
    client = await Client.connect(pop3.ports["pop3"])
    assert await client.login(password="wrong") == "-ERR " + replies.ERR_AUTH_FAILED.text
    assert await client.login(user="nobody@pop.test") == "-ERR " + replies.ERR_AUTH_FAILED.text
    assert (await client.login(password=PASSWORD)).startswith("+OK")
    await client.close()


async def test_redis_down_gives_sys_temp(start_pop3: StartServer, namespace: str) -> None:
    """RFC 3206 [SYS/TEMP] when the store is unreachable; the session survives and the server stays up."""
    from tests.helpers import free_port

    down = Store.connect(f"redis://127.0.0.1:{free_port()}/0", namespace)
    try:
        server = await start_pop3(backend=down)
        client = await Client.connect(server.ports["pop3"])
        assert await client.login() == "-ERR " + replies.ERR_TEMPORARY.text
        assert await client.cmd(f"AUTH PLAIN {_plain()}") == "-ERR " + replies.ERR_TEMPORARY.text
        _, capa = await client.multiline("CAPA")
        assert "UIDL" in capa
        await client.close()
    finally:
        await down.close()


def _plain() -> str:
    import base64

    return base64.b64encode(f"\0{USER}\0{PASSWORD}".encode()).decode()


async def test_uids_are_printable_and_short(pop3: Pop3Server, account: str, store: Store) -> None:
    await deliver(store, *(message(str(i)) for i in range(5)))
    client = await Client.connect(pop3.ports["pop3"])
    await client.login()
    _, lines = await client.multiline("UIDL")
    uids = [line.split(" ", 1)[1] for line in lines]
    assert len(set(uids)) == 5
    # RFC 1939 §7: 1 to 70 characters in the range 0x21 to 0x7E.
    assert all(1 <= len(uid) <= 70 and all(0x21 <= ord(ch) <= 0x7E for ch in uid) for uid in uids)
    await client.close()


async def test_disconnect_in_the_middle_of_retr(start_pop3: StartServer, account: str, store: Store) -> None:
    server = await start_pop3(pop3_chunk_size=4096)
    big = message("big", "z" * 5_000_000 + "\r\n")
    await deliver(store, big, message("small"))
    client = await Client.connect(server.ports["pop3"])
    assert (await client.login()).startswith("+OK")
    assert (await client.cmd("DELE 2")).startswith("+OK")
    assert (await client.cmd("RETR 1")).startswith("+OK")
    assert len(await client.reader.read(10_000)) > 0
    client.writer.transport.abort()  # a reset, not a clean close
    await wait_until(_lock_free(store), timeout=10, what="lock released after reset mid-RETR")
    assert len(await store.mailboxes.snapshot(USER)) == 2
