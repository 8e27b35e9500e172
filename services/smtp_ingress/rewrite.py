"""Header changes a content filter asks for (fields added, fields removed, a new Subject), made to a spooled message."""

from __future__ import annotations

import re
from email.header import Header

from shared.spool import MessageSpool

# The header block is looked for in this much of the message; beyond it only added fields are applied.
HEADER_LIMIT = 256 * 1024
_CHUNK = 64 * 1024
_FIELD_START = re.compile(rb"(?m)^(?=[^ \t\r\n])")


def header_field(name: str, value: str) -> bytes:
    """`Name: value` CRLF, folded where the value had line breaks, non-ASCII as RFC 2047 words; never a bare CR or
    LF that could end the header block early."""
    clean_name = re.sub(r"[^!-9;-~]", "", name) or "X-Filter"
    if not value.isascii():
        value = Header(value, "utf-8", header_name=clean_name).encode()
    lines = [line.strip() for line in re.split(r"\r\n|\r|\n", value)]
    folded = "\r\n\t".join(line for line in lines if line)
    return f"{clean_name}: {folded}\r\n".encode("ascii", "replace")


def _split(head: bytes) -> tuple[bytes, int] | None:
    """The header block (its fields, each with CRLF) and where the body starts; None when no end is in sight."""
    if head.startswith(b"\r\n"):
        return b"", 0
    end = head.find(b"\r\n\r\n")
    if end < 0:
        return None
    return head[: end + 2], end + 2


def edit_block(block: bytes, remove: frozenset[str], subject: str | None) -> bytes:
    """The header block without the fields named in `remove` (lower-case), and with Subject replaced."""
    starts = [match.start() for match in _FIELD_START.finditer(block)]
    fields = [block[a:b] for a, b in zip(starts, [*starts[1:], len(block)], strict=True)]
    if not fields and block:
        fields = [block]
    kept = []
    replaced = False
    for item in fields:
        name = item.split(b":", 1)[0].strip().decode("ascii", "replace").lower()
        if name == "subject" and subject is not None:
            if not replaced:
                kept.append(header_field("Subject", subject))
                replaced = True
            continue
        if name in remove:
            continue
        kept.append(item)
    if subject is not None and not replaced:
        kept.append(header_field("Subject", subject))
    return b"".join(kept)


def apply(
    spool: MessageSpool,
    add: list[tuple[str, str]],
    remove: frozenset[str],
    subject: str | None,
    directory: str | None,
) -> MessageSpool:
    """`spool` changed as asked (a new spool; the old one is closed), or `spool` itself when nothing changes."""
    added = b"".join(header_field(name, value) for name, value in add)
    if not added and not remove and subject is None:
        return spool
    split = _split(spool.head(HEADER_LIMIT)) if remove or subject is not None else None
    if split is None:
        block, start = b"", 0
    else:
        block, start = split[0], split[1]
        block = edit_block(block, remove, subject)
    changed = MessageSpool(directory, spool.memory_limit)
    try:
        changed.write(added + block)
        skip = start
        for chunk in spool.chunks(b"", _CHUNK):
            if skip >= len(chunk):
                skip -= len(chunk)
                continue
            changed.write(chunk[skip:])
            skip = 0
    except BaseException:
        changed.close()
        raise
    spool.close()
    return changed
