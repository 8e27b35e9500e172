"""The Maildrop against the real store: lock then snapshot, chunked reads, a body vanishing mid-transfer."""

from __future__ import annotations

from typing import cast

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.pop3.maildrop import Maildrop, MessageGone, WholeBody
from services.store import MessageInfo, Store
from tests.pop3.conftest import USER, deliver, message


async def test_chunked_read_and_vanishing_body(account: str, store: Store) -> None:
    body = message("big", "y" * 10_000 + "\r\n")
    (uid,) = await deliver(store, body)
    maildrop = await Maildrop.open(store, USER, lock_ttl=10)
    assert maildrop is not None
    try:
        assert await Maildrop.open(store, USER, lock_ttl=10) is None  # exclusive
        info = maildrop.get(1)
        assert info is not None and info.size == len(body)
        chunks = [chunk async for chunk in await maildrop.open_message(info, 1024)]
        assert b"".join(chunks) == body and len(chunks) == len(body) // 1024 + 1

        stream = await maildrop.open_message(info, 1024)
        first = await stream.__anext__()
        await store.redis.delete(store.keys.mailbox(USER).message(uid))
        with pytest.raises(MessageGone):
            async for _ in stream:
                pass
        assert len(first) == 1024
        with pytest.raises(MessageGone):
            await maildrop.open_message(info, 1024)
    finally:
        await maildrop.close()
    assert not await store.redis.exists(store.keys.mailbox(USER).lock)


async def test_a_message_within_one_chunk_is_read_whole(account: str, store: Store) -> None:
    small, big = message("small", "s" * 500 + "\r\n"), message("big", "b" * 3000 + "\r\n")
    await deliver(store, small, big)
    maildrop = await Maildrop.open(store, USER, lock_ttl=10)
    assert maildrop is not None
    try:
        for n, body, whole in ((1, small, True), (2, big, False)):
            info = maildrop.get(n)
            assert info is not None
            stream = await maildrop.open_message(info, 1024)
            assert isinstance(stream, WholeBody) is whole
            assert b"".join([chunk async for chunk in stream]) == body
        # A body shorter than the snapshot says is not whole: the chunked read reports it after what it sent.
        info = maildrop.get(1)
        assert info is not None
        short = MessageInfo(info.uid, info.size + 1, info.wire)
        stream = await maildrop.open_message(short, 1024)
        assert not isinstance(stream, WholeBody)
        with pytest.raises(MessageGone):
            async for _ in stream:
                pass
    finally:
        await maildrop.close()


async def test_read_ahead_is_bounded_and_taken_once(
    account: str, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    from services.pop3 import maildrop as module

    bodies = [message(f"r{i}", "z" * 500 + "\r\n") for i in range(6)]
    bodies.append(message("big", "b" * 3000 + "\r\n"))
    await deliver(store, *bodies)
    monkeypatch.setattr(module, "PREFETCH_BUDGET", 3 * len(bodies[0]) + 100)
    maildrop = await Maildrop.open(store, USER, lock_ttl=10)
    assert maildrop is not None
    try:
        await maildrop.prefetch([7, 1, 2, 3, 4, 5], 1024)
        # The one bigger than a chunk is streamed as before; the budget stops after three bodies.
        assert [maildrop.is_prefetched(n) for n in range(1, 8)] == [True, True, True, False, False, False, False]
        for n in (1, 4, 7, 1):  # read ahead, read now, chunked, and again after the entry was taken
            info = maildrop.get(n)
            assert info is not None
            chunks = [chunk async for chunk in await maildrop.open_message(info, 1024)]
            assert b"".join(chunks) == bodies[n - 1]
        assert not maildrop.is_prefetched(1)
    finally:
        await maildrop.close()


@given(
    sizes=st.lists(st.integers(0, 10**6), max_size=30),
    marks=st.lists(st.one_of(st.integers(0, 32), st.none()), max_size=40),
)
def test_stat_totals_follow_every_dele_and_rset(sizes: list[int], marks: list[int | None]) -> None:
    """STAT keeps running totals (constant time however big the maildrop); they always equal a recount. A mark of
    None is an RSET; numbers out of range or marked twice change nothing."""
    messages = [MessageInfo(f"u{i}", size) for i, size in enumerate(sizes)]
    maildrop = Maildrop(cast(Store, None), USER, "token", messages, lock_ttl=10)
    for mark in marks:
        if mark is None:
            maildrop.reset()
        else:
            maildrop.mark_deleted(mark)
        visible = maildrop.visible()
        assert maildrop.stat() == (len(visible), sum(info.size for _, info in visible))
