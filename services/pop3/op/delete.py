"""Deletion: DELE and RSET mark and unmark; QUIT enters the UPDATE state and removes (RFC 1939 §6)."""

from __future__ import annotations

from services.pop3 import metrics, replies
from services.pop3.command import Dele, Quit, Rset
from services.pop3.response import Response
from services.pop3.state import SessionState, State


async def dele(session: SessionState, command: Dele) -> Response:
    maildrop = session.maildrop
    assert maildrop is not None
    if maildrop.get(command.msg) is None:
        return replies.ERR_ALREADY_DELETED if maildrop.exists(command.msg) else replies.ERR_NO_SUCH_MESSAGE
    # Only marked: the store is untouched until QUIT, so a disconnect deletes nothing (docs/design.md invariant 6).
    maildrop.mark_deleted(command.msg)
    return replies.ok_dele(command.msg)


async def rset(session: SessionState, command: Rset) -> Response:
    assert session.maildrop is not None
    session.maildrop.reset()
    return replies.ok_maildrop(*session.maildrop.stat())


async def quit_(session: SessionState, command: Quit) -> Response:
    maildrop = session.maildrop
    if session.state is State.AUTHORIZATION or maildrop is None:
        return replies.OK_SIGNOFF  # RFC 1939 §4: QUIT before login ends the session, no UPDATE state
    session.state = State.UPDATE
    session.maildrop = None
    try:
        removed = await maildrop.commit()
    except Exception as exc:
        session.log.warning("pop3 update failed", error=str(exc))
        return replies.ERR_UPDATE_FAILED
    finally:
        # Released before the reply goes out, so a client that reconnects at once never meets its own lock.
        await maildrop.close()
    if removed is None:
        session.log.warning("pop3 update refused: lock lost", deleted=len(maildrop.deleted))
        return replies.ERR_LOCK_LOST
    metrics.MESSAGES_DELETED.inc(removed)
    session.log.info("pop3 update", deleted=removed)
    return replies.ok_update(len(maildrop.messages) - len(maildrop.deleted))
