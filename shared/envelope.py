"""The envelope of a queued message and its mapping to and from AMQP headers."""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any

from shared.dsn import RecipientRequest

HEADER_PREFIX = "x-postroom-"
# Set on a dead letter put back into the work queue (`postroom queue dead requeue`): it may have been partly
# delivered before, so the delivery reads its progress record.
REQUEUED = f"{HEADER_PREFIX}requeued"
DSN_ENVID = f"{HEADER_PREFIX}dsn-envid"
DSN_RCPT = f"{HEADER_PREFIX}dsn-rcpt"
DSN_RET = f"{HEADER_PREFIX}dsn-ret"


def _fields(item: str, count: int) -> list[str]:
    """`count` tab-separated fields of a header item (missing ones empty)."""
    parts = item.split("\t", count - 1)
    return parts + [""] * (count - len(parts))


@dataclass(frozen=True)
class Envelope:
    """Everything about a message that is not its RFC 5322 text."""

    queue_id: str
    mail_from: str  # "" is the null reverse-path <>
    recipients: tuple[str, ...]
    first_seen: float = field(default_factory=time.time)
    attempt: int = 0
    client_address: str = ""
    auth_user: str = ""
    esmtp: tuple[str, ...] = ()  # MAIL FROM parameters such as BODY=8BITMIME, SMTPUTF8
    # Per-recipient last temporary failure text, carried across retries for the final bounce.
    last_errors: tuple[tuple[str, str], ...] = ()
    # RFC 3461 (DSN): MAIL's RET (FULL/HDRS) and ENVID (decoded), and per envelope recipient as given at RCPT
    # (recipient, NOTIFY, ORCPT as "type;address"); empty when the client gave none, and in messages queued
    # before DSN existed, whose headers simply lack them.
    dsn_ret: str = ""
    dsn_envid: str = ""
    dsn_recipients: tuple[tuple[str, str, str], ...] = ()

    def dsn_request(self, recipient: str) -> RecipientRequest:
        """The NOTIFY and ORCPT given for envelope recipient `recipient` (none: the defaults)."""
        wanted = recipient.lower()
        for address, notify, orcpt in self.dsn_recipients:
            if address.lower() == wanted:
                return RecipientRequest(notify, orcpt)
        return RecipientRequest()

    def to_headers(self) -> dict[str, Any]:
        """AMQP headers (field table) carrying this envelope."""
        return {
            f"{HEADER_PREFIX}queue-id": self.queue_id,
            f"{HEADER_PREFIX}mail-from": self.mail_from,
            f"{HEADER_PREFIX}rcpt-to": list(self.recipients),
            f"{HEADER_PREFIX}first-seen": repr(self.first_seen),
            f"{HEADER_PREFIX}attempt": self.attempt,
            f"{HEADER_PREFIX}client-address": self.client_address,
            f"{HEADER_PREFIX}auth-user": self.auth_user,
            f"{HEADER_PREFIX}esmtp": list(self.esmtp),
            f"{HEADER_PREFIX}last-errors": [f"{rcpt}\t{text}" for rcpt, text in self.last_errors],
            **self.dsn_headers(),
        }

    def dsn_headers(self) -> dict[str, Any]:
        """The DSN headers, only those with a value: a message without DSN parameters is queued as before."""
        headers: dict[str, Any] = {}
        if self.dsn_envid:
            headers[DSN_ENVID] = self.dsn_envid
        if self.dsn_recipients:
            headers[DSN_RCPT] = ["\t".join(item) for item in self.dsn_recipients]
        if self.dsn_ret:
            headers[DSN_RET] = self.dsn_ret
        return headers

    @classmethod
    def from_headers(cls, headers: dict[str, Any]) -> Envelope:
        """Rebuild an envelope from AMQP headers; raise ValueError when they are not ours."""

        def text(name: str, default: str | None = None) -> str:
            value = headers.get(f"{HEADER_PREFIX}{name}", default)
            if value is None:
                raise ValueError(f"missing header {HEADER_PREFIX}{name}")
            return value.decode() if isinstance(value, bytes) else str(value)

        def texts(name: str) -> tuple[str, ...]:
            values = headers.get(f"{HEADER_PREFIX}{name}") or []
            return tuple(v.decode() if isinstance(v, bytes) else str(v) for v in values)

        errors = tuple(tuple(item.split("\t", 1)) for item in texts("last-errors") if "\t" in item)
        recipients = texts("rcpt-to")
        if not recipients:
            raise ValueError("envelope has no recipients")
        return cls(
            queue_id=text("queue-id"),
            mail_from=text("mail-from"),
            recipients=recipients,
            first_seen=float(text("first-seen")),
            attempt=int(text("attempt", "0")),
            client_address=text("client-address", ""),
            auth_user=text("auth-user", ""),
            esmtp=texts("esmtp"),
            last_errors=errors,  # type: ignore[arg-type]
            dsn_ret=text("dsn-ret", ""),
            dsn_envid=text("dsn-envid", ""),
            dsn_recipients=tuple(
                (rcpt, notify, orcpt) for rcpt, notify, orcpt in (_fields(item, 3) for item in texts("dsn-rcpt"))
            ),
        )

    def retry(self, recipients: tuple[str, ...], errors: dict[str, str]) -> Envelope:
        """The envelope that travels on to the next attempt: only the failed recipients."""
        return replace(self, recipients=recipients, attempt=self.attempt + 1, last_errors=tuple(errors.items()))
