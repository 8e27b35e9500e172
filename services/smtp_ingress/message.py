"""The message text as queued: CRLF line ends only, our Received: header first, Message-ID/Date on submission.

SMTP smuggling (bare CR / bare LF): we NORMALISE. Our DATA reader (data.py) ends DATA only at <CRLF>.<CRLF> (lines
are split on CRLF alone, as aiosmtpd does), so `\\n.\\n`, `\\n.\\r\\n`, `\\r.\\r\\n` and `\\r\\n.\\r` are message
content, never an end of data. After dot-stuffing is removed from the CRLF-delimited lines (RFC 5321 §4.5.2),
every bare CR and bare LF left is turned into CRLF (data.py, with this module's `normalise_line_ends`), so the
queued text has CRLF line ends only and anything that looked like an end-of-data to a sloppy parser is now an
ordinary line holding a dot, which delivery and POP3 dot-stuff on the way out. Normalising rather than rejecting
keeps mail from old clients that send bare LF flowing; what we queue, relay or serve can never smuggle a second
message.
"""

from __future__ import annotations

import functools
import math
import re
import time
from dataclasses import dataclass
from datetime import datetime
from email.utils import format_datetime

_BARE_LINE_END = re.compile(rb"\r\n|\r|\n")
_CIPHER = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def normalise_line_ends(data: bytes) -> bytes:
    """Every CR, LF and CRLF becomes CRLF (a CRLF stays as it is)."""
    crlf = data.count(b"\r\n")
    if data.count(b"\r") == crlf and data.count(b"\n") == crlf:
        return data  # the usual case: no bare CR or LF, so no copy of a possibly large message
    return _BARE_LINE_END.sub(b"\r\n", data)


@dataclass(frozen=True)
class ReceivedFacts:
    """What the Received: header states; every text here was checked or produced by us, never raw client text."""

    hostname: str
    queue_id: str
    client_ip: str
    helo: str | None  # only when it passed policy.valid_helo
    esmtp: bool
    tls_version: str | None
    tls_cipher: str | None
    auth_user: str | None  # named only when the operator opts in (POSTROOM_SMTP_RECEIVED_AUTH)
    recipient: str | None  # given only for a single recipient (RFC 5321 §4.4 "for", privacy)
    when: float | None = None
    authenticated: bool = False  # the client used AUTH ("ESMTPA", RFC 3848), named or not


def _address_literal(ip: str) -> str:
    return f"[IPv6:{ip}]" if ":" in ip else f"[{ip}]"


def received_header(facts: ReceivedFacts) -> bytes:
    """A trace header per RFC 5321 §4.4 (with-protocol per RFC 3848), folded, CRLF-terminated."""
    literal = _address_literal(facts.client_ip)
    from_part = f"from {facts.helo} ({literal})" if facts.helo else f"from {literal} ({literal})"
    protocol = "ESMTP" if facts.esmtp else "SMTP"
    if facts.tls_version:
        protocol += "S"
    if facts.authenticated or facts.auth_user:
        protocol += "A"
    comments = []
    if facts.tls_version and facts.tls_cipher and _CIPHER.match(facts.tls_cipher):
        comments.append(f"(using {facts.tls_version} with cipher {facts.tls_cipher})")
    if facts.auth_user:
        comments.append(f"(authenticated sender: {facts.auth_user})")
    by_part = f"by {facts.hostname} (Postroom) with {protocol} id {facts.queue_id}"
    lines = [f"Received: {from_part}", *(f"\t{comment}" for comment in comments), f"\t{by_part}"]
    if facts.recipient:
        lines.append(f"\tfor <{facts.recipient}>;")
    else:
        lines[-1] += ";"
    when = facts.when if facts.when is not None else time.time()
    lines.append(f"\t{_rfc5322_date(when)}")
    return ("\r\n".join(lines) + "\r\n").encode("utf-8")


def _rfc5322_date(when: float) -> str:
    # The text changes once a second, so each second is formatted once rather than once per message.
    # datetime rounds to microseconds: the last half microsecond of a second prints as the next one.
    second = math.floor(when)
    if when - second >= 0.999999:
        return _format_date(when)
    return _date_of_second(second)


@functools.lru_cache(maxsize=4)
def _date_of_second(second: int) -> str:
    return _format_date(second)


def _format_date(when: float) -> str:
    return format_datetime(datetime.fromtimestamp(when).astimezone())


def header_names(data: bytes) -> set[str]:
    """Lower-cased names of the header fields of a CRLF message (stops at the first empty line)."""
    end = data.find(b"\r\n\r\n")
    block = data if end < 0 else data[: end + 2]
    if data.startswith(b"\r\n"):
        return set()
    names = set()
    for line in block.split(b"\r\n"):
        if line[:1] in (b" ", b"\t") or b":" not in line:
            continue
        names.add(line.split(b":", 1)[0].strip().lower().decode("ascii", "replace"))
    return names


def submission_headers(data: bytes, queue_id: str, hostname: str, when: float | None = None) -> bytes:
    """Message-ID and Date for a message from an authenticated submitter that lacks them (RFC 6409 §8)."""
    names = header_names(data)
    added = []
    if "message-id" not in names:
        added.append(f"Message-ID: <{queue_id}@{hostname}>\r\n")
    if "date" not in names:
        stamp = when if when is not None else time.time()
        added.append(f"Date: {_rfc5322_date(stamp)}\r\n")
    return "".join(added).encode("ascii")
