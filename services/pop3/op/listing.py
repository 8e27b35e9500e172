"""TRANSACTION-state listing commands: STAT, LIST [n] and UIDL [n] (RFC 1939 §5 and §7)."""

from __future__ import annotations

from services.pop3 import replies
from services.pop3.command import List, Stat, Uidl
from services.pop3.maildrop import Maildrop
from services.pop3.response import MultiLine, Response
from services.pop3.state import SessionState


def _maildrop(session: SessionState) -> Maildrop:
    assert session.maildrop is not None  # the state gate only lets TRANSACTION commands through
    return session.maildrop


async def stat(session: SessionState, command: Stat) -> Response:
    # Sizes are the stored CRLF octets, exactly what RETR sends before dot-stuffing (RFC 1939 §5).
    return replies.ok_stat(*_maildrop(session).stat())


async def list_(session: SessionState, command: List) -> Response:
    maildrop = _maildrop(session)
    if command.msg is not None:
        info = maildrop.get(command.msg)
        return replies.ERR_NO_SUCH_MESSAGE if info is None else replies.ok_list_one(command.msg, info.size)
    visible = maildrop.visible()
    head = replies.ok_list_all(len(visible), sum(info.size for _, info in visible))
    return MultiLine(head, [f"{n} {info.size}" for n, info in visible])


async def uidl(session: SessionState, command: Uidl) -> Response:
    # The store uses the queue id as uid: unique, stable across sessions, printable, under 70 characters.
    maildrop = _maildrop(session)
    if command.msg is not None:
        info = maildrop.get(command.msg)
        return replies.ERR_NO_SUCH_MESSAGE if info is None else replies.ok_uidl_one(command.msg, info.uid)
    return MultiLine(replies.OK_UIDL_ALL, [f"{n} {info.uid}" for n, info in maildrop.visible()])
