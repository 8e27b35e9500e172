"""The header block as the inbound checks read and change it.

They read the From domain, take out forged Authentication-Results: fields of our authserv-id (RFC 8601 §5) and write
our own Authentication-Results: field.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from email.utils import getaddresses

# The header a client can filter on when DMARC says quarantine (docs/deliverability.md); one from outside is dropped.
QUARANTINE_HEADER = b"X-Postroom-DMARC: quarantine\r\n"
_QUARANTINE_NAME = b"x-postroom-dmarc"
_AR_NAME = b"authentication-results"
# What we put in a property value unquoted: a domain name (RFC 8601 §2.2 pvalue), nothing else from the sender.
_DOMAIN = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9_.-]{0,251}[A-Za-z0-9])?$")
_COMMENT = re.compile(r"\([^()]*\)")


def safe_domain(text: str | None) -> str | None:
    """`text` when it can go into a header as it is, else None."""
    if text and _DOMAIN.match(text) and ".." not in text:
        return text.lower()
    return None


@dataclass(frozen=True, slots=True)
class HeadFacts:
    from_domain: str | None  # None: no From, several, or one without a usable domain (RFC 7489 §6.6.1)
    head_length: int  # bytes of the header block, its final CRLF included (not the empty line)
    cleaned: bytes | None  # the header block without forged fields; None when nothing was removed


def read_head(head: bytes, authserv_id: str) -> HeadFacts:
    """Read the header block at the start of `head` (CRLF line ends, as the DATA reader makes them)."""
    end = head.find(b"\r\n\r\n")
    block = head[: end + 2] if end >= 0 else head
    fields = _fields(block)
    kept: list[bytes] = []
    removed = False
    froms: list[str] = []
    ours = authserv_id.lower()
    for field in fields:
        name = field.split(b":", 1)[0].strip().lower()
        if name == _QUARANTINE_NAME or (name == _AR_NAME and _authserv_id(field) == ours):
            removed = True
            continue
        if name == b"from":
            froms.append(_value(field))
        kept.append(field)
    return HeadFacts(_from_domain(froms), len(block), b"".join(kept) if removed else None)


def _fields(block: bytes) -> list[bytes]:
    """Each field with its continuation lines, CRLFs kept."""
    fields: list[bytes] = []
    for line in block.splitlines(keepends=True):
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1] += line
        else:
            fields.append(line)
    return fields


def _value(field: bytes) -> str:
    value = field.split(b":", 1)[1] if b":" in field else b""
    return re.sub(r"\r\n[ \t]", " ", value.decode("utf-8", "replace")).strip()


def _authserv_id(field: bytes) -> str:
    """RFC 8601 §2.2: the first token of the value, after any comments."""
    value = _value(field)
    for _ in range(5):  # nested comments: a few passes take out the usual ones
        value = _COMMENT.sub(" ", value)
    return re.split(r"[\s;]", value.strip(), maxsplit=1)[0].lower()


def _from_domain(froms: list[str]) -> str | None:
    return _domain_of_from(froms[0]) if len(froms) == 1 else None


@functools.lru_cache(maxsize=4096)
def _domain_of_from(value: str) -> str | None:
    addresses = [address for _name, address in getaddresses([value]) if address]
    if len(addresses) != 1 or "@" not in addresses[0]:
        return None
    return safe_domain(addresses[0].rpartition("@")[2].rstrip(".").rstrip(">"))


def results_header(authserv_id: str, results: list[str]) -> bytes:
    """RFC 8601 §2.2: `Authentication-Results: <authserv-id>; <resinfo>; …`, one resinfo per folded line."""
    if not results:
        return f"Authentication-Results: {authserv_id}; none\r\n".encode("ascii", "replace")
    return ("Authentication-Results: " + ";\r\n\t".join([authserv_id, *results]) + "\r\n").encode("ascii", "replace")
