"""The command table: command type → (handler, states it is allowed in); the state gate runs here, once."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from services.pop3 import command as c
from services.pop3.op import auth, capability, delete, fetch, listing
from services.pop3.response import Response
from services.pop3.state import SessionState, State

Handler = Callable[[SessionState, Any], Awaitable[Response]]

AUTHORIZATION = frozenset({State.AUTHORIZATION})
TRANSACTION = frozenset({State.TRANSACTION})
BOTH = AUTHORIZATION | TRANSACTION


@dataclass(frozen=True)
class Entry:
    handler: Handler
    states: frozenset[State]


TABLE: dict[type[Any], Entry] = {
    c.User: Entry(auth.user, AUTHORIZATION),
    c.Pass: Entry(auth.pass_, AUTHORIZATION),
    c.Apop: Entry(auth.apop, AUTHORIZATION),
    c.Auth: Entry(auth.auth, AUTHORIZATION),
    c.Stls: Entry(capability.stls, AUTHORIZATION),
    c.Utf8: Entry(capability.utf8, AUTHORIZATION),
    c.Capa: Entry(capability.capa, BOTH),
    c.Noop: Entry(capability.noop, TRANSACTION),
    c.Stat: Entry(listing.stat, TRANSACTION),
    c.List: Entry(listing.list_, TRANSACTION),
    c.Uidl: Entry(listing.uidl, TRANSACTION),
    c.Retr: Entry(fetch.retr, TRANSACTION),
    c.Top: Entry(fetch.top, TRANSACTION),
    c.Dele: Entry(delete.dele, TRANSACTION),
    c.Rset: Entry(delete.rset, TRANSACTION),
    c.Quit: Entry(delete.quit_, BOTH),
}


def gate(session: SessionState, command: c.Command) -> Entry | None:
    """The entry for `command` if the session's state allows it, else None (RFC 1939: -ERR, state unchanged)."""
    entry = TABLE[type(command)]
    return entry if session.state in entry.states else None
