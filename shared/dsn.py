"""Delivery status notification requests (RFC 3461): the MAIL and RCPT parameters, xtext, and what they ask for."""

from __future__ import annotations

import re
from dataclasses import dataclass

RET_FULL = "FULL"
RET_HDRS = "HDRS"
NEVER = "NEVER"
SUCCESS = "SUCCESS"
FAILURE = "FAILURE"
DELAY = "DELAY"
_NOTIFY_WORDS = frozenset({SUCCESS, FAILURE, DELAY})
# RFC 3461 §4.4 and §4.2: ENVID at most 100 characters, ORCPT at most 500 (both as xtext).
ENVID_MAX = 100
ORCPT_MAX = 500
# RFC 3461 §4: xtext = *( xchar / hexchar ); xchar is "!" to "~" but "+" and "="; hexchar is "+" and two
# upper-case hex digits.
_XTEXT = re.compile(r"(?:[!-*,-<>-~]|\+[0-9A-F]{2})*")
_HEXCHAR = re.compile(r"\+([0-9A-F]{2})")
_ADDR_TYPE = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+")


class DSNError(ValueError):
    """A DSN parameter that breaks RFC 3461's syntax; the message says which."""


def xtext_decode(text: str) -> str:
    """The text an xtext stands for; its hexchars are octets of UTF-8 (what xtext_encode makes of non-ASCII)."""
    if _XTEXT.fullmatch(text) is None:
        raise DSNError(f"not xtext: {text[:40]!r}")
    octets = bytearray()
    # split() alternates the literal runs (ASCII: the pattern above) and the two hex digits of each hexchar.
    for index, piece in enumerate(_HEXCHAR.split(text)):
        octets += bytes((int(piece, 16),)) if index % 2 else piece.encode("ascii")
    try:
        return octets.decode("utf-8")
    except UnicodeError:
        raise DSNError("xtext holds octets that are not UTF-8") from None


def xtext_encode(text: str) -> str:
    """xtext of `text`: "+", "=", controls, space and non-ASCII (as UTF-8 octets) hex-encoded."""
    out = []
    for octet in text.encode("utf-8", "replace"):
        char = chr(octet)
        out.append(char if 33 <= octet <= 126 and char not in "+=" else f"+{octet:02X}")
    return "".join(out)


def parse_ret(value: str) -> str:
    ret = value.upper()
    if ret not in (RET_FULL, RET_HDRS):
        raise DSNError("RET takes FULL or HDRS")
    return ret


def parse_envid(value: str) -> str:
    if len(value) > ENVID_MAX:
        raise DSNError(f"ENVID longer than {ENVID_MAX} characters")
    envid = xtext_decode(value)
    if not all(" " <= c <= "~" for c in envid):
        raise DSNError("ENVID must decode to printable US-ASCII")
    return envid


def parse_notify(value: str) -> str:
    """`NEVER`, or SUCCESS, FAILURE and DELAY in any order without repeats; returned upper-case, comma-separated."""
    words = value.upper().split(",")
    if words == [NEVER]:
        return NEVER
    if not words or len(set(words)) != len(words) or not set(words) <= _NOTIFY_WORDS:
        raise DSNError("NOTIFY takes NEVER, or any of SUCCESS, FAILURE, DELAY separated by commas")
    return ",".join(words)


def parse_orcpt(value: str) -> str:
    """`addr-type;address` with the address xtext-decoded (how reports quote it, RFC 3464 §2.3.1)."""
    if len(value) > ORCPT_MAX:
        raise DSNError(f"ORCPT longer than {ORCPT_MAX} characters")
    kind, semicolon, address = value.partition(";")
    if not semicolon or _ADDR_TYPE.fullmatch(kind) is None or not address:
        raise DSNError("ORCPT takes addr-type;xtext")
    decoded = xtext_decode(address)
    if any(c < " " or c == "\x7f" for c in decoded):
        raise DSNError("ORCPT holds control characters")
    return f"{kind.lower()};{decoded}"


@dataclass(frozen=True)
class RecipientRequest:
    """The DSN parameters of one envelope recipient; "" where the client gave none."""

    notify: str = ""
    orcpt: str = ""

    def wants(self, kind: str) -> bool:
        """Whether a notice of `kind` (SUCCESS, FAILURE, DELAY) is wanted. Without NOTIFY, RFC 3461 §4.1 leaves it
        to us: failures and delays, as before DSN existed; success only when asked for."""
        if not self.notify:
            return kind != SUCCESS
        return kind in self.notify.split(",")
