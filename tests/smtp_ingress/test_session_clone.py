"""A session cloned from a listener's pristine session is indistinguishable from one built by aiosmtpd."""

from __future__ import annotations

import asyncio
from typing import Any

from services.smtp_ingress.limits import ConnectionLimiter
from services.smtp_ingress.session import IngressSMTP, SessionRegistry


class _Handler:
    async def handle_EHLO(self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]) -> Any:
        return responses

    async def auth_PLAIN(self, server: Any, args: list[str]) -> Any:
        return None


def _session() -> IngressSMTP:
    registry = SessionRegistry(ConnectionLimiter(10, 10, exempt=lambda ip: False), (), 3, 60.0)
    return IngressSMTP(
        _Handler(), registry=registry, listener="smtp", hostname="mx.test", loop=asyncio.get_running_loop()
    )


async def test_clone_has_fresh_connection_state_and_bound_methods() -> None:
    template = _session()
    clone, other = template.clone(), template.clone()
    assert set(vars(clone)) == set(vars(_session()))
    # Per-connection objects are new for each clone; configuration is shared.
    for name in ("_stream_reader_wr", "_closed", "command_size_limits", "_smtp_methods"):
        assert getattr(clone, name) is not getattr(template, name)
        assert getattr(clone, name) is not getattr(other, name)
    assert clone._handle_hooks is template._handle_hooks
    assert clone._smtp_methods.session is clone
    verbs = set(dict(clone._smtp_methods.items()))
    assert verbs == set(template._smtp_methods.verbs)
    assert {"EHLO", "MAIL", "RCPT", "DATA", "QUIT"} <= verbs
    # A verb's guarded method is made once per session.
    assert clone._smtp_methods.get("MAIL") is clone._smtp_methods.get("MAIL")
    assert clone._smtp_methods.get("NOSUCH") is None
    # aiosmtpd's built-in LOGIN is bound to the clone; the handler's PLAIN is the handler's.
    assert clone._auth_methods["LOGIN"].method.__self__ is clone
    assert clone._auth_methods["PLAIN"].method.__self__ is template.event_handler
    assert clone.session is None and clone.envelope is None and clone.transport is None
    assert clone._admitted is None and clone.stage == "connect"


async def test_getaddr_matches_aiosmtpd() -> None:
    session = _session()
    from aiosmtpd.smtp import SMTP

    for arg in ["<a@b.test>", "<a@b.test> SIZE=10", "a@b.test", "", "<>", "<bad", "<@x:a@b.test>", '<"q x"@b>']:
        assert session._getaddr(arg) == SMTP._getaddr(session, arg), arg
