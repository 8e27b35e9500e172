"""RFC 3464 delivery status notifications: a multipart/report from the null sender back to the original sender."""

from __future__ import annotations

import hashlib
import re
import time
from datetime import UTC, datetime
from email.utils import format_datetime

from services.delivery.outcome import Outcome
from shared.envelope import Envelope
from shared.queue_id import is_queue_id, new_queue_id

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_UNSAFE = re.compile(r"[\x00-\x1f\x7f]+")
_SMTP_REPLY = re.compile(r"^[245]\d\d[ -]")


def report_queue_id(envelope: Envelope, kind: str = "bounce") -> str:
    """A queue id for the report derived from the original's, so a redelivered original bounces into the
    same id and a local sender's mailbox stores that bounce once (the dedup key is per queue id)."""
    digest = int.from_bytes(hashlib.sha256(f"{envelope.queue_id}:{envelope.attempt}:{kind}".encode()).digest()[:10])
    tail = "".join(_ALPHABET[(digest >> (5 * i)) & 31] for i in reversed(range(16)))
    head = envelope.queue_id[:10] if is_queue_id(envelope.queue_id) else new_queue_id()[:10]
    return head + tail


def header_section(message: bytes) -> bytes:
    """The original's header section (RFC 3464 §4.3 allows returning only the headers: text/rfc822-headers)."""
    end = message.find(b"\r\n\r\n")
    return message if end < 0 else message[: end + 2]


def _clean(text: str) -> str:
    """One line, no control characters: remote replies must not be able to add header fields."""
    return _UNSAFE.sub(" ", text).strip()


def _date(timestamp: float) -> str:
    """An RFC 5322 date in UTC with a +0000 zone."""
    return format_datetime(datetime.fromtimestamp(timestamp, UTC))


def _address_field(address: str) -> str:
    # RFC 6533: UTF-8 addresses use the utf-8 address type.
    return f"rfc822; {address}" if address.isascii() else f"utf-8; {address}"


def _diagnostic(found: Outcome) -> str:
    text = _clean(found.diagnostic)
    if found.transport == "smtp" and _SMTP_REPLY.match(text + " "):
        return f"smtp; {text}"
    return f"x-postroom; {found.enhanced} {text}"


def _recipient_block(found: Outcome, action: str, now: float) -> str:
    lines = []
    if found.original and found.original.lower() != found.recipient.lower():
        lines.append(f"Original-Recipient: {_address_field(found.original)}")
    lines.append(f"Final-Recipient: {_address_field(found.recipient)}")
    lines.append(f"Action: {action}")
    lines.append(f"Status: {found.enhanced}")
    if found.remote_mta:
        lines.append(f"Remote-MTA: dns; {_clean(found.remote_mta)}")
    lines.append(f"Diagnostic-Code: {_diagnostic(found)}")
    lines.append(f"Last-Attempt-Date: {_date(now)}")
    return "\r\n".join(lines) + "\r\n"


def compose(
    envelope: Envelope,
    message: bytes,
    failed: list[Outcome],
    hostname: str,
    now: float | None = None,
    action: str = "failed",
) -> tuple[bytes, Envelope]:
    """The report and its envelope: MAIL FROM <> (RFC 3464 §2, RFC 5321 §4.5.5) to the original MAIL FROM."""
    now = time.time() if now is None else now
    queue_id = report_queue_id(envelope, "bounce" if action == "failed" else action)
    boundary = f"{queue_id}/{hostname}"
    arrival = _date(envelope.first_seen)
    if action == "failed":
        subject = "Undelivered Mail Returned to Sender"
        intro = "your message could not be delivered\r\nto one or more recipients. It has been returned to you."
    else:
        subject = "Delayed Mail (still being retried)"
        intro = "your message could not be delivered yet.\r\nIt is still being retried; you need not resend it."
    human = [
        f"This is the mail system at host {hostname}.",
        "",
        f"I'm sorry to have to inform you that {intro}",
        "",
        *(f"<{o.recipient}>: {_clean(o.diagnostic)}" for o in failed),
        "",
    ]
    status = [
        f"Reporting-MTA: dns; {hostname}",
        f"X-Postroom-Queue-ID: {envelope.queue_id}",
        f"Arrival-Date: {arrival}",
        "",
    ]
    blocks = "\r\n".join(_recipient_block(o, action, now) for o in failed)
    parts = [
        f"From: Mail Delivery System <MAILER-DAEMON@{hostname}>",
        f"To: <{envelope.mail_from}>",
        f"Subject: {subject}",
        f"Date: {_date(now)}",
        f"Message-ID: <{queue_id}@{hostname}>",
        "Auto-Submitted: auto-replied",  # RFC 3834: no automatic answer to this one
        "MIME-Version: 1.0",
        f'Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"',
        "",
        "This is a MIME-encapsulated message.",
        "",
        f"--{boundary}",
        "Content-Description: Notification",
        "Content-Type: text/plain; charset=utf-8",
        "Content-Transfer-Encoding: 8bit",
        "",
        *human,
        f"--{boundary}",
        "Content-Description: Delivery report",
        "Content-Type: message/delivery-status",
        "",
        *status,
    ]
    head = "\r\n".join(parts).encode() + b"\r\n" + blocks.encode()
    returned = (
        f"\r\n--{boundary}\r\nContent-Description: Undelivered Message Headers\r\n"
        "Content-Type: text/rfc822-headers\r\n\r\n"
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    report = head + returned + header_section(message) + tail
    eight_bit = not report.isascii()
    report_envelope = Envelope(
        queue_id=queue_id,
        mail_from="",
        recipients=(envelope.mail_from,),
        first_seen=now,
        esmtp=(("BODY=8BITMIME",) if eight_bit else ()) + (() if envelope.mail_from.isascii() else ("SMTPUTF8",)),
    )
    return report, report_envelope
