"""Session-level commands: CAPA (RFC 2449), STLS (RFC 2595), UTF8 (RFC 6856) and NOOP (RFC 1939 §5)."""

from __future__ import annotations

from services.pop3 import replies, sasl
from services.pop3.command import Capa, Noop, Stls, Utf8
from services.pop3.response import MultiLine, Response
from services.pop3.state import SessionState, State


def capabilities(session: SessionState) -> list[str]:
    """RFC 2449 §6: what this session can use now; login capabilities only where logging in is allowed."""
    lines = ["TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING"]
    if session.state is State.AUTHORIZATION:
        if session.can_start_tls:
            lines.append("STLS")
        if session.plaintext_auth_allowed:
            lines += ["USER", "SASL " + " ".join(sasl.MECHANISMS)]
    # RFC 6856 §2: "USER" says UTF-8 user names and passwords are accepted in USER/PASS.
    lines += ["UTF8 USER", "EXPIRE NEVER", "IMPLEMENTATION Postroom"]
    return lines


async def capa(session: SessionState, command: Capa) -> Response:
    return MultiLine(replies.OK_CAPA, capabilities(session))


async def stls(session: SessionState, command: Stls) -> Response:
    if session.tls:
        return replies.ERR_ALREADY_TLS
    if not session.can_start_tls:
        return replies.ERR_STLS_UNAVAILABLE
    return replies.OK_STLS


async def utf8(session: SessionState, command: Utf8) -> Response:
    # Messages are served as stored (no RFC 6857 downgrade for clients that never send UTF8).
    session.utf8 = True
    return replies.OK_UTF8


async def noop(session: SessionState, command: Noop) -> Response:
    return replies.OK_NOOP
