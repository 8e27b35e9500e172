"""The Maildrop against the real store: lock then snapshot, chunked reads, a body vanishing mid-transfer."""

from __future__ import annotations

import pytest

from services.pop3.maildrop import Maildrop, MessageGone
from services.store import Store
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
