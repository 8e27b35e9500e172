"""RFC 3464 delivery status notifications: a multipart/report from the null sender back to the original sender.

`compose` is total: whatever text the outcomes, the envelope and the settings hold (replies in any bytes, lone
surrogates, control characters, endless lines), it returns a well-formed report, because a bounce that cannot be
composed leaves the sender untold and the message stuck (tests/delivery/test_bounce_property.py).
"""

from __future__ import annotations

import hashlib
import math
import re
import textwrap
import time
from datetime import UTC, datetime
from email.utils import format_datetime

from services.delivery.outcome import RecipientOutcome, Status
from services.delivery.replytext import readable
from shared.dsn import RET_FULL
from shared.envelope import Envelope
from shared.queue_id import is_queue_id, new_queue_id

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_SMTP_REPLY = re.compile(r"^[245]\d\d[ -]")
_STATUS = re.compile(r"^[245]\.\d{1,3}\.\d{1,3}$")
# RFC 2046 §5.1.1: the characters a boundary may be made of (space excepted), at most 70 of them.
_NOT_BCHARS = re.compile(r"[^0-9A-Za-z'()+_,\-./:=?]")
_LINE_END = re.compile(rb"\r\n|\r|\n")
_LONG_LINE = re.compile(rb"[^\r\n]{999}")
# RFC 5322 §2.1.1: at most 998 octets per line. Text we write stays below it: addresses are cut to this many
# octets, diagnostics to readable()'s length, and longer lines are folded or wrapped. Fields are folded only past
# _FOLD (ASCII there), so that a usual diagnostic stays on one line, as parsers hand it back unfolded.
_ADDRESS_OCTETS = 512
_FOLD = 900
_XTEXT_SPECIALS = "+=\\"


def report_queue_id(envelope: Envelope, kind: str = "bounce") -> str:
    """A queue id for the report derived from the original's, so a redelivered original bounces into the
    same id and a local sender's mailbox stores that bounce once (the dedup key is per queue id)."""
    seed = f"{envelope.queue_id}:{envelope.attempt}:{kind}".encode("utf-8", "surrogatepass")
    digest = int.from_bytes(hashlib.sha256(seed).digest()[:10])
    tail = "".join(_ALPHABET[(digest >> (5 * i)) & 31] for i in reversed(range(16)))
    head = envelope.queue_id[:10] if is_queue_id(envelope.queue_id) else new_queue_id()[:10]
    return head + tail


def header_section(message: bytes) -> bytes:
    """The original's header section (RFC 3464 §4.3 allows returning only the headers: text/rfc822-headers)."""
    end = message.find(b"\r\n\r\n")
    return message if end < 0 else message[: end + 2]


def _returned_headers(message: bytes) -> bytes:
    """The header section as text/rfc822-headers content: CRLF line ends, ending in CRLF, no line over 998
    octets (a longer one is folded: RFC 5322 §2.2.3 lets a field continue on a line that starts with a space)."""
    section = header_section(message)
    if b"\r" in section.replace(b"\r\n", b"") or b"\n" in section.replace(b"\r\n", b""):
        section = _LINE_END.sub(b"\r\n", section)
    if section and not section.endswith(b"\r\n"):
        section += b"\r\n"
    if _LONG_LINE.search(section) is None:
        return section
    lines = []
    for line in section.split(b"\r\n"):
        pieces = [line[i : i + 990] for i in range(0, len(line), 990)] or [b""]
        lines.append(b"\r\n ".join(pieces))
    return b"\r\n".join(lines)


def _cut(text: str, octets: int) -> str:
    """At most `octets` bytes of UTF-8, cut at a character boundary."""
    data = text.encode()
    return text if len(data) <= octets else data[:octets].decode("utf-8", "ignore")


def _clean(text: str) -> str:
    """One line of readable text: remote replies must not be able to add header fields or break the report."""
    return readable(text)


def _address(text: str) -> str:
    return _cut(readable(text).replace(" ", ""), _ADDRESS_OCTETS)


def _host(hostname: str) -> str:
    """Our host name as an ASCII domain (an A-label when it is an IDN), for fields that want one."""
    host = _address(hostname)
    if not host.isascii():
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError:
            host = re.sub(r"[^A-Za-z0-9.-]", "", host)
    return host or "localhost"


def _ascii(text: str, also: str = "", limit: int = 10**9) -> str:
    """Non-ASCII characters (and those in `also`) as RFC 6533 embedded Unicode `\\x{HEX}`, at most `limit`
    characters in all: the delivery-status part stays US-ASCII, as RFC 3464's field syntax requires; the
    human-readable part keeps the UTF-8."""
    pieces, length = [], 0
    for c in text:
        piece = c if c.isascii() and c not in also else f"\\x{{{ord(c):X}}}"
        length += len(piece)
        if length > limit:
            break
        pieces.append(piece)
    return "".join(pieces)


def _date(timestamp: float) -> str:
    """An RFC 5322 date in UTC with a +0000 zone (a time from a broken header becomes the epoch or year 9999)."""
    if not math.isfinite(timestamp):
        timestamp = 0.0
    return format_datetime(datetime.fromtimestamp(min(max(timestamp, 0.0), 253402300799.0), UTC))


def _address_field(address: str) -> str:
    # RFC 6533 §3: a UTF-8 address in message/delivery-status is utf-8-addr-xtext ("+", "=", "\" escaped too).
    # An address field cannot be folded: an escaped address is cut to fit one line.
    if address.isascii():
        return f"rfc822; {address}"
    return "utf-8; " + _ascii(address, also=_XTEXT_SPECIALS, limit=_FOLD)


def _status(found: RecipientOutcome, action: str) -> str:
    """The RFC 3463 code: the outcome's when well-formed, its class made to match the action (5 for failed,
    4 for delayed, 2 for delivered and relayed; RFC 3464 §2.3.4)."""
    code = found.enhanced if _STATUS.match(found.enhanced) else ""
    if not code:
        code = {Status.PERMANENT: "5.0.0", Status.TEMPORARY: "4.0.0"}.get(found.status, "2.0.0")
    wanted = {"failed": "5", "delayed": "4"}.get(action, "2")
    return wanted + code[1:]


def _diagnostic(found: RecipientOutcome, action: str) -> str:
    text = _clean(found.diagnostic)
    if found.transport == "smtp" and _SMTP_REPLY.match(text + " "):
        return f"smtp; {text}"
    code = found.enhanced if _STATUS.match(found.enhanced) else _status(found, action)
    return f"x-postroom; {code} {text}"


def _fold(name: str, value: str) -> str:
    """`Name: value` folded at spaces (RFC 5322 §2.2.3) so no line passes _FOLD octets; a word longer than that is
    split, since no line may pass 998."""
    words = [word[i : i + _FOLD] for word in value.split(" ") for i in range(0, max(len(word), 1), _FOLD)]
    lines: list[str] = []
    line = f"{name}:"
    for n, word in enumerate(words):
        if n and len(line) + 1 + len(word) > _FOLD:
            lines.append(line)
            line = ""
        line += " " + word
    lines.append(line)
    return "\r\n".join(lines)


def _wrapped(text: str) -> list[str]:
    """Plain-text lines of at most 200 characters (800 octets of UTF-8)."""
    return textwrap.wrap(text, 200, break_long_words=True, break_on_hyphens=False) or [""]


def _original_recipient(orcpt: str) -> str:
    """RFC 3464 §2.3.1 from the ORCPT the client gave (`type;address`, RFC 3461 §4.2)."""
    kind, _, address = orcpt.partition(";")
    kind = _ascii(_cut(readable(kind).replace(" ", ""), 64)) or "rfc822"
    return f"{kind}; {_ascii(_address(address), also=_XTEXT_SPECIALS, limit=_FOLD)}"


def _recipient_block(found: RecipientOutcome, action: str, now: float, orcpt: str) -> str:
    lines = []
    recipient, original = _address(found.recipient), _address(found.original)
    if orcpt:
        lines.append(f"Original-Recipient: {_original_recipient(orcpt)}")
    elif original and original.lower() != recipient.lower():
        lines.append(f"Original-Recipient: {_address_field(original)}")
    lines.append(f"Final-Recipient: {_address_field(recipient)}")
    lines.append(f"Action: {action}")
    lines.append(f"Status: {_status(found, action)}")
    remote_mta = _ascii(_address(found.remote_mta))
    if remote_mta:
        lines.append(_fold("Remote-MTA", f"dns; {remote_mta}"))
    lines.append(_fold("Diagnostic-Code", _ascii(_diagnostic(found, action))))
    lines.append(f"Last-Attempt-Date: {_date(now)}")
    return "\r\n".join(lines) + "\r\n"


def _boundary(queue_id: str, hostname: str, contents: list[bytes]) -> str:
    """A boundary of legal characters that occurs in none of the parts (RFC 2046 §5.1.1)."""
    base = _NOT_BCHARS.sub("", f"{queue_id}/{hostname}")[:64]
    for n in range(1000):
        boundary = base if n == 0 else f"{base}={n}"
        delimiter = f"--{boundary}".encode()
        if not any(delimiter in content for content in contents):
            return boundary
    raise AssertionError("no free boundary")  # a thousand delimiters in one report: cannot happen


# Subject and opening of the human-readable part, by action (RFC 3464 §2.3.3).
_TEXTS = {
    "failed": (
        "Undelivered Mail Returned to Sender",
        "I'm sorry to have to inform you that your message could not be delivered\r\n"
        "to one or more recipients. It has been returned to you.",
    ),
    "delayed": (
        "Delayed Mail (still being retried)",
        "I'm sorry to have to inform you that your message could not be delivered yet.\r\n"
        "It is still being retried; you need not resend it.",
    ),
    "delivered": (
        "Successful Mail Delivery Report",
        "Your message was successfully delivered to the destination(s) listed below,\r\nas you asked (NOTIFY=SUCCESS).",
    ),
    "relayed": (
        "Successful Mail Delivery Report",
        "Your message was relayed to the destination(s) listed below. Their mail system\r\n"
        "does not offer delivery notices (DSN), so you will hear nothing more about it.",
    ),
}


def _returned_message(message: bytes) -> bytes:
    """The whole original as message/rfc822 content: CRLF line ends (it was queued so), ending in CRLF."""
    return message if not message or message.endswith(b"\r\n") else message + b"\r\n"


def _returned_part(boundary: str, full: bool, action: str) -> bytes:
    """The MIME header of the third part: the whole message (RET=FULL) or its header section."""
    what = "Undelivered Message" if action in ("failed", "delayed") else "Message"
    if full:
        return f"\r\n--{boundary}\r\nContent-Description: {what}\r\nContent-Type: message/rfc822\r\n\r\n".encode()
    return (
        f"\r\n--{boundary}\r\nContent-Description: {what} Headers\r\nContent-Type: text/rfc822-headers\r\n\r\n".encode()
    )


def compose(
    envelope: Envelope,
    message: bytes,
    failed: list[RecipientOutcome],
    hostname: str,
    now: float | None = None,
    action: str = "failed",
) -> tuple[bytes, Envelope]:
    """The report and its envelope: MAIL FROM <> (RFC 3464 §2, RFC 5321 §4.5.5) to the original MAIL FROM."""
    now = time.time() if now is None else now
    queue_id = report_queue_id(envelope, "bounce" if action == "failed" else action)
    host = _host(hostname)
    sender = _address(envelope.mail_from)
    subject, intro = _TEXTS[action]
    human = [
        f"This is the mail system at host {host}.",
        "",
        intro,
        "",
        *(line for o in failed for line in _wrapped(f"<{_address(o.recipient)}>: {_clean(o.diagnostic)}")),
        "",
    ]
    status = [
        _fold("Reporting-MTA", f"dns; {_ascii(host)}"),
        _fold("X-Postroom-Queue-ID", _ascii(_address(envelope.queue_id))),
        f"Arrival-Date: {_date(envelope.first_seen)}",
        "",
    ]
    if envelope.dsn_envid:
        # RFC 3464 §2.2.1, as the client gave it in ENVID (decoded; printable ASCII, checked at MAIL).
        status.insert(0, _fold("Original-Envelope-Id", _ascii(readable(envelope.dsn_envid))))
    blocks = "\r\n".join(
        _recipient_block(o, action, now, envelope.dsn_request(o.original or o.recipient).orcpt) for o in failed
    )
    human_text = "\r\n".join(human).encode()
    status_text = ("\r\n".join(status) + "\r\n" + blocks).encode()
    # RFC 3461 §4.3: RET=FULL asks for the whole message in a failure report; otherwise the headers.
    full = action == "failed" and envelope.dsn_ret == RET_FULL
    returned = _returned_message(message) if full else _returned_headers(message)
    boundary = _boundary(queue_id, host, [human_text, status_text, returned])
    head = [
        f"From: Mail Delivery System <MAILER-DAEMON@{host}>",
        f"To: <{sender}>",
        f"Subject: {subject}",
        f"Date: {_date(now)}",
        f"Message-ID: <{queue_id}@{host}>",
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
        "",
    ]
    report = b"".join(
        (
            "\r\n".join(head).encode(),
            human_text,
            f"\r\n--{boundary}\r\nContent-Description: Delivery report\r\n"
            "Content-Type: message/delivery-status\r\n\r\n".encode(),
            status_text,
            _returned_part(boundary, full, action),
            returned,
            f"\r\n--{boundary}--\r\n".encode(),
        )
    )
    eight_bit = not report.isascii()
    report_envelope = Envelope(
        queue_id=queue_id,
        mail_from="",
        recipients=(sender,),
        first_seen=now,
        esmtp=(("BODY=8BITMIME",) if eight_bit else ()) + (() if sender.isascii() else ("SMTPUTF8",)),
    )
    return report, report_envelope
