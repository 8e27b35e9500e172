"""The rspamd content filter over its HTTP protocol (`POST /checkv2`): the message, its envelope, the verdict.

rspamd's protocol (https://rspamd.com/doc/developers/protocol.html): the message is the request body, the
envelope and the client go in request headers (From, Rcpt once per recipient, IP, Helo, User, Queue-Id), and the
reply is JSON whose `action` is the verdict; `milter.add_headers` / `milter.remove_headers` and `subject` say how
the message is to be changed, as rspamd's milter proxy would change it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from multidict import CIMultiDict

from shared.spool import MessageSpool

CHUNK = 64 * 1024


class FilterUnavailable(Exception):
    """rspamd could not be asked, or did not answer in time or in its protocol."""


@dataclass(frozen=True)
class Envelope:
    """What rspamd is told about a message besides its text."""

    queue_id: str
    mail_from: str
    recipients: tuple[str, ...]
    client_ip: str
    helo: str | None
    user: str | None


@dataclass(frozen=True)
class Verdict:
    """rspamd's action (`no action`, `greylist`, `add header`, `rewrite subject`, `soft reject`, `reject`) and the
    changes it asks for: header fields to add (name, value) and to remove (lower-cased names), a new Subject."""

    action: str
    score: float = 0.0
    add_headers: tuple[tuple[str, str], ...] = ()
    remove_headers: frozenset[str] = field(default_factory=frozenset)
    subject: str | None = None


def parse_verdict(reply: Any) -> Verdict:
    """The verdict in rspamd's JSON reply; FilterUnavailable when the reply holds none."""
    if not isinstance(reply, dict) or not isinstance(reply.get("action"), str):
        raise FilterUnavailable("rspamd reply without an action")
    found = reply.get("milter")
    milter: dict[str, Any] = found if isinstance(found, dict) else {}
    adds: list[tuple[str, str]] = []
    add_headers = milter.get("add_headers")
    if isinstance(add_headers, dict):
        for name, spec in add_headers.items():
            # A value is a string, {"value": ..., "order": n}, or a list of either (one field each).
            for item in spec if isinstance(spec, list) else [spec]:
                value = item.get("value") if isinstance(item, dict) else item
                if isinstance(value, str):
                    adds.append((str(name), value))
    removes = milter.get("remove_headers")
    subject = reply.get("subject")
    score = reply.get("score")
    return Verdict(
        action=str(reply["action"]),
        score=float(score) if isinstance(score, int | float) else 0.0,
        add_headers=tuple(adds),
        remove_headers=frozenset(str(n).lower() for n in removes) if isinstance(removes, dict) else frozenset(),
        subject=subject if isinstance(subject, str) else None,
    )


class Rspamd:
    """A client of one rspamd (`POSTROOM_RSPAMD_URL`); every call ends within `timeout` seconds."""

    def __init__(self, url: str, timeout: float) -> None:
        self.url = url.rstrip("/") + "/checkv2"
        self.timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        return self._session

    async def check(self, spool: MessageSpool, envelope: Envelope) -> Verdict:
        headers = CIMultiDict[str]()
        headers["Queue-Id"] = envelope.queue_id
        headers["IP"] = envelope.client_ip
        # rspamd reads an empty From as the null sender.
        headers["From"] = envelope.mail_from
        for recipient in envelope.recipients:
            headers.add("Rcpt", recipient)
        if envelope.helo:
            headers["Helo"] = envelope.helo
        if envelope.user:
            headers["User"] = envelope.user
        headers["Content-Length"] = str(spool.size)
        body: bytes | AsyncIterator[bytes] = spool.getvalue() if spool.in_memory else _stream(spool)
        try:
            async with self._client().post(self.url, data=body, headers=headers) as response:
                if response.status != 200:
                    raise FilterUnavailable(f"rspamd answered HTTP {response.status}")
                return parse_verdict(await response.json(content_type=None))
        except FilterUnavailable:
            raise
        except (aiohttp.ClientError, TimeoutError, ValueError, OSError) as exc:
            raise FilterUnavailable(f"{type(exc).__name__}: {exc}") from None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


async def _stream(spool: MessageSpool) -> AsyncIterator[bytes]:
    """A spooled (large) message in pieces, so that it is never whole in memory on its way to rspamd."""
    for chunk in spool.chunks(b"", CHUNK):
        yield chunk
        await asyncio.sleep(0)
