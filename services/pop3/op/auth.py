"""AUTHORIZATION-state commands that log in: USER/PASS (RFC 1939 §7), AUTH PLAIN/LOGIN (RFC 5034), APOP (off)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from services.pop3 import metrics, replies, sasl
from services.pop3.command import Apop, Auth, Pass, User
from services.pop3.maildrop import Maildrop
from services.pop3.response import Challenge, MultiLine, Reply, Response
from services.pop3.state import SessionState, State
from services.store.addresses import account_address


async def user(session: SessionState, command: User) -> Response:
    if not session.plaintext_auth_allowed:
        return replies.ERR_PLAINTEXT_DISALLOWED
    # Always +OK: whether the account exists is only ever answered after a password (RFC 1939 §7 allows either).
    session.user = command.name
    return replies.OK_USER


async def pass_(session: SessionState, command: Pass) -> Response:
    if not session.plaintext_auth_allowed:
        return replies.ERR_PLAINTEXT_DISALLOWED
    if session.user is None:
        return replies.ERR_NEED_USER
    name, session.user = session.user, None
    return await login(session, name, command.password, "user")


async def apop(session: SessionState, command: Apop) -> Response:
    # APOP (RFC 1939 §7) needs the plaintext password (or an equivalent) on the server to compute the MD5 digest;
    # we keep only argon2id hashes, and MD5 challenge-response is weak anyway. AUTH PLAIN over TLS replaces it.
    return replies.ERR_APOP_DISABLED


async def auth(session: SessionState, command: Auth) -> Response:
    if command.mechanism is None:
        # Not in RFC 5034 but widely expected (it predates CAPA): AUTH alone lists the mechanisms.
        return MultiLine(replies.OK_AUTH_MECHANISMS, sasl.MECHANISMS)
    if command.mechanism not in sasl.MECHANISMS:
        return replies.ERR_AUTH_MECHANISM
    if not session.plaintext_auth_allowed:
        return replies.ERR_PLAINTEXT_DISALLOWED
    if command.mechanism == "PLAIN":
        return await _respond(session, command.initial_response, "", _plain_step(session))
    return await _respond(session, command.initial_response, sasl.LOGIN_USERNAME_PROMPT, _login_user_step(session))


Step = Callable[[bytes], Awaitable[Response]]


async def _respond(session: SessionState, initial: str | None, prompt: str, step: Step) -> Response:
    """Use the initial response when given (RFC 5034 §4), else ask for it with a continuation."""
    if initial is None:
        return Challenge(prompt, _decoding(step))
    return await _decoding(step)(initial.encode())


def _decoding(step: Step) -> Step:
    async def resume(line: bytes) -> Response:
        if line.strip(b"\r\n") == sasl.CANCEL:
            return replies.ERR_AUTH_CANCELLED
        try:
            data = sasl.decode_response(line)
        except sasl.SaslError:
            return replies.ERR_AUTH_BAD_BASE64
        return await step(data)

    return resume


def _plain_step(session: SessionState) -> Step:
    async def step(data: bytes) -> Response:
        try:
            name, password = sasl.decode_plain(data)
        except sasl.SaslError:
            # A malformed exchange costs the same as a wrong password, so it is no cheaper probe.
            return await login(session, "", "", "plain")
        return await login(session, name, password, "plain")

    return step


def _login_user_step(session: SessionState) -> Step:
    async def step(data: bytes) -> Response:
        try:
            name = sasl.decode_text(data)
        except sasl.SaslError:
            name = ""
        return Challenge(sasl.LOGIN_PASSWORD_PROMPT, _decoding(_login_password_step(session, name)))

    return step


def _login_password_step(session: SessionState, name: str) -> Step:
    async def step(data: bytes) -> Response:
        try:
            password = sasl.decode_text(data)
        except sasl.SaslError:
            password = ""
        return await login(session, name, password, "login")

    return step


async def login(session: SessionState, name: str, password: str, mechanism: str) -> Reply:
    """Verify, then lock and snapshot the maildrop; unknown user and wrong password look and cost the same."""
    ctx = session.ctx
    name = name.strip()
    if name and password:
        valid = await ctx.store.accounts.authenticate(name, password)
    else:
        await ctx.store.accounts.authenticate("nobody@invalid", password or "-")  # the same argon2 work
        valid = False
    if not valid:
        metrics.AUTH_FAILURES.labels(mechanism).inc()
        session.auth_failures += 1
        delay = await ctx.throttle.failure(session.peer_ip, name)
        session.log.info("pop3 login failed", user=name, mechanism=mechanism, delay=delay)
        if delay > 0:
            # The delay slows guessing; it also hides from timing whether the account exists (both paths wait).
            await asyncio.sleep(delay)
        if session.auth_failures >= ctx.settings.pop3_max_auth_failures:
            return replies.ERR_TOO_MANY_AUTH_FAILURES
        return replies.ERR_AUTH_FAILED
    await ctx.throttle.success(name)
    # The maildrop (and its lock) of the account as the store spells it, however the login wrote it.
    name = account_address(name)
    maildrop = await Maildrop.open(ctx.store, name, ctx.settings.pop3_lock_ttl)
    if maildrop is None:
        if not await ctx.store.accounts.user_exists(name):
            return replies.ERR_AUTH_FAILED  # removed between the password check and the lock
        metrics.LOCK_CONFLICTS.inc()
        session.log.info("pop3 maildrop in use", user=name)
        return replies.ERR_IN_USE
    session.maildrop = maildrop
    session.state = State.TRANSACTION
    session.log = session.log.bind(user=name)
    session.log.info("pop3 login", mechanism=mechanism, tls=session.tls, messages=len(maildrop.messages))
    return replies.ok_maildrop(*maildrop.stat())
