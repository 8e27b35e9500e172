"""SMTP AUTH (RFC 4954) with SASL PLAIN (RFC 4616) and LOGIN, checked against the store off the event loop."""

from __future__ import annotations

import asyncio
import binascii
from base64 import b64decode
from typing import Any

from aiosmtpd.smtp import AuthResult

from services.smtp_ingress import metrics, replies
from services.smtp_ingress.replies import Reply
from services.store import LoginThrottle, Store
from services.store.addresses import AddressError, account_address
from shared.logging import get_logger

log = get_logger(__name__)


def decode_initial_response(text: str) -> bytes | None:
    """RFC 4954 §4: `=` is an empty initial response; anything else must be strict base64."""
    if text == "=":
        return b""
    try:
        return b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        return None


def parse_plain(blob: bytes) -> tuple[str, str] | None:
    """`authzid NUL authcid NUL passwd`; an authzid other than the authcid (proxy auth) is not supported."""
    parts = blob.split(b"\x00")
    if len(parts) != 3:
        return None
    try:
        authzid, login, password = (part.decode("utf-8") for part in parts)
    except UnicodeDecodeError:
        return None
    if not login or (authzid and authzid.lower() != login.lower()):
        return None
    return login, password


class Authenticator:
    """Verifies credentials; failures wait as the store's login throttle says (shared with POP3 and every replica)."""

    def __init__(self, store: Store, throttle: LoginThrottle) -> None:
        self.store = store
        self.throttle = throttle

    async def check(self, ip: str, mechanism: str, login: str, password: str) -> AuthResult:
        if await self.store.accounts.authenticate(login, password):
            await self.throttle.success(login)
            account = _account(login)
            log.info("auth ok", client=ip, mechanism=mechanism, user=account)
            # The session's identity is the account as the store spells it (MAIL FROM ownership compares it).
            # aiosmtpd's smtp_AUTH pushes the message: our Reply, though aiosmtpd types it `str`.
            return AuthResult(success=True, auth_data=account, message=replies.AUTH_OK)  # type: ignore[arg-type]
        delay = await self.throttle.failure(ip, login)
        metrics.AUTH_FAILURES.labels(mechanism).inc()
        log.info("auth failed", client=ip, mechanism=mechanism, delay=delay)
        await asyncio.sleep(delay)
        return _refused(replies.AUTH_INVALID)

    async def plain(self, server: Any, ip: str, args: list[str]) -> AuthResult:
        blob = await _first_response(server, args, replies.CHALLENGE_EMPTY)
        if isinstance(blob, Reply):
            return _refused(blob)
        credentials = parse_plain(blob)
        if credentials is None:
            return _refused(replies.AUTH_BAD_RESPONSE)
        return await self.check(ip, "PLAIN", *credentials)

    async def login(self, server: Any, ip: str, args: list[str]) -> AuthResult:
        user_blob = await _first_response(server, args, replies.CHALLENGE_USERNAME)
        if isinstance(user_blob, Reply):
            return _refused(user_blob)
        password_blob = await server.challenge(replies.CHALLENGE_PASSWORD)
        if isinstance(password_blob, Reply):
            return _refused(password_blob)
        try:
            login, password = user_blob.decode("utf-8"), password_blob.decode("utf-8")
        except UnicodeDecodeError:
            return _refused(replies.AUTH_BAD_RESPONSE)
        if not login:
            return _refused(replies.AUTH_BAD_RESPONSE)
        return await self.check(ip, "LOGIN", login, password)


async def _first_response(server: Any, args: list[str], prompt: Reply) -> bytes | Reply:
    """The initial response on the AUTH line (RFC 4954 §4), else the client's answer to `prompt`, decoded; or the
    Reply that ends the exchange (not base64, or the client cancelled with `*`)."""
    if len(args) > 1:
        blob = decode_initial_response(args[1])
        return replies.AUTH_BAD_BASE64 if blob is None else blob
    answer: bytes | Reply = await server.challenge(prompt)
    return answer


def _refused(reply: Reply) -> AuthResult:
    """A failed exchange; aiosmtpd's smtp_AUTH pushes the message: our Reply, though aiosmtpd types it `str`."""
    return AuthResult(success=False, handled=False, message=reply)  # type: ignore[arg-type]


def _account(login: str) -> str:
    try:
        return account_address(login)
    except AddressError:  # not reached: authenticate accepts only addresses
        return login.strip().lower()
