"""TRANSACTION-state retrieval: RETR and TOP (RFC 1939 §7), streamed from the store in chunks."""

from __future__ import annotations

from collections.abc import AsyncIterator

from services.pop3 import metrics, replies
from services.pop3.command import Retr, Top
from services.pop3.maildrop import MessageGone
from services.pop3.response import Response, Stream
from services.pop3.state import SessionState
from services.store import MessageInfo


async def _open(session: SessionState, msg: int) -> tuple[MessageInfo, AsyncIterator[bytes]] | Response:
    """The message's size and its chunks, or the error reply when it is not there (any more)."""
    assert session.maildrop is not None
    info = session.maildrop.get(msg)
    if info is None:
        return replies.ERR_NO_SUCH_MESSAGE
    try:
        return info, await session.maildrop.open_message(info, session.ctx.settings.pop3_chunk_size)
    except MessageGone:
        return replies.ERR_MESSAGE_GONE


async def retr(session: SessionState, command: Retr) -> Response:
    opened = await _open(session, command.msg)
    if not isinstance(opened, tuple):
        return opened
    info, chunks = opened
    return Stream(replies.ok_retr(info.size), chunks, on_complete=metrics.MESSAGES_RETRIEVED.inc, wire=info.wire)


async def top(session: SessionState, command: Top) -> Response:
    opened = await _open(session, command.msg)
    if not isinstance(opened, tuple):
        return opened
    _, chunks = opened
    return Stream(replies.OK_TOP, chunks, top_lines=command.lines)
