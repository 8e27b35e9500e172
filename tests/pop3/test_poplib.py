"""Python's poplib against the in-process server: the happy paths of keep mode and delete mode."""

from __future__ import annotations

import asyncio
import poplib

from services.pop3.server import Pop3Server
from services.store import Store
from tests.helpers import client_tls
from tests.pop3.conftest import PASSWORD, USER, deliver, message


def _connect(port: int) -> poplib.POP3:
    return poplib.POP3("127.0.0.1", port, timeout=20)


async def test_download_and_delete(pop3: Pop3Server, account: str, store: Store) -> None:
    bodies = [message(f"number {i}", f"Body {i}\r\n.line with a dot\r\n") for i in range(3)]
    uids = await deliver(store, *bodies)

    def session() -> tuple[tuple[int, int], list[bytes], list[bytes], list[list[bytes]], bytes]:
        client = _connect(pop3.ports["pop3"])
        client.user(USER)
        client.pass_(PASSWORD)
        stat = client.stat()
        listing = client.list()[1]
        uidl = client.uidl()[1]
        messages = [client.retr(n)[1] for n in (1, 2, 3)]
        for n in (1, 2, 3):
            client.dele(n)
        return stat, listing, uidl, messages, client.quit()

    stat, listing, uidl, messages, quit_reply = await asyncio.to_thread(session)
    assert stat == (3, sum(len(b) for b in bodies))
    assert listing == [f"{n} {len(b)}".encode() for n, b in enumerate(bodies, 1)]
    assert uidl == [f"{n} {uid}".encode() for n, uid in enumerate(uids, 1)]
    for got, body in zip(messages, bodies, strict=True):
        # poplib strips CRLF and undoes dot-stuffing: joining must give back exactly what was stored.
        assert b"\r\n".join(got) + b"\r\n" == body
    assert quit_reply.startswith(b"+OK")
    assert await store.mailboxes.snapshot(USER) == []


async def test_keep_mode_leaves_everything(pop3: Pop3Server, account: str, store: Store) -> None:
    uids = await deliver(store, message("kept 1"), message("kept 2"))

    def session() -> list[bytes]:
        client = _connect(pop3.ports["pop3"])
        client.user(USER)
        client.pass_(PASSWORD)
        listing = client.uidl()[1]
        for n in (1, 2):
            client.retr(n)
        client.quit()
        return listing

    first = await asyncio.to_thread(session)
    second = await asyncio.to_thread(session)
    assert first == second == [f"{n} {uid}".encode() for n, uid in enumerate(uids, 1)]
    assert [m.uid for m in await store.mailboxes.snapshot(USER)] == uids


async def test_rset_top_noop_capa_utf8(pop3: Pop3Server, account: str, store: Store) -> None:
    await deliver(store, message("top", "l1\r\nl2\r\nl3\r\n"))

    def session() -> tuple[dict[str, list[str]], list[bytes], bytes, bytes]:
        client = _connect(pop3.ports["pop3"])
        capa = client.capa()
        client.utf8()
        client.user(USER)
        client.pass_(PASSWORD)
        top = client.top(1, 1)[1]
        client.dele(1)
        rset = client.rset()
        noop = client.noop()
        client.quit()
        return capa, top, rset, noop

    capa, top, rset, noop = await asyncio.to_thread(session)
    for name in ("TOP", "UIDL", "USER", "SASL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING", "STLS", "UTF8"):
        assert name in capa
    assert capa["SASL"] == ["PLAIN", "LOGIN"]
    assert top[-2:] == [b"", b"l1"]
    assert rset.startswith(b"+OK") and noop.startswith(b"+OK")
    assert len(await store.mailboxes.snapshot(USER)) == 1


async def test_implicit_tls_and_stls(pop3: Pop3Server, account: str, store: Store) -> None:
    await deliver(store, message("secret"))

    def over_pop3s() -> tuple[int, int]:
        client = poplib.POP3_SSL("127.0.0.1", pop3.ports["pop3s"], context=client_tls(), timeout=20)
        client.user(USER)
        client.pass_(PASSWORD)
        stat = client.stat()
        client.quit()
        return stat

    def over_stls() -> tuple[dict[str, list[str]], tuple[int, int]]:
        client = _connect(pop3.ports["pop3"])
        client.stls(client_tls())
        capa = client.capa()
        client.user(USER)
        client.pass_(PASSWORD)
        stat = client.stat()
        client.quit()
        return capa, stat

    assert await asyncio.to_thread(over_pop3s) == (1, len(message("secret")))
    capa, stat = await asyncio.to_thread(over_stls)
    assert "STLS" not in capa  # RFC 2595 §4: not offered once TLS is active
    assert stat == (1, len(message("secret")))
