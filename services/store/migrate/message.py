"""What every imported message must pass, and the UIDL of a message no old server named."""

from __future__ import annotations

import base64
import hashlib
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

# RFC 1939 §7 (UIDL): a unique-id is 1 to 70 characters in the range 0x21 to 0x7E.
_UIDL = re.compile(r"[\x21-\x7e]{1,70}")
# A header field's name (RFC 5322 §3.6.8: printable ASCII but the colon), then its colon.
_FIELD = re.compile(rb"[\x21-\x39\x3b-\x7e]+[ \t]*:")


@dataclass(frozen=True)
class Candidate:
    """One message found in a source: where it came from (for reports), its UIDL if the old server gave it one."""

    origin: str
    uidl: str | None
    data: bytes | None  # None: it could not be read or is known broken (`problem` says why)
    problem: str | None = None


def valid_uidl(uidl: str) -> bool:
    return _UIDL.fullmatch(uidl) is not None


def problem_of(data: bytes) -> str | None:
    """Why `data` is not a message we may store, or None. Only what no mail client could use is refused: an empty
    file, binary data (NUL bytes; RFC 5322 §2.3 forbids them, and a compressed file has them), or a first line that
    is no header field (the file holds something else, or the start of a message is missing)."""
    if not data.strip():
        return "empty"
    if b"\0" in data:
        return "holds NUL bytes (binary or compressed data, not a message)"
    if _FIELD.match(data) is None:
        return "does not start with a header field"
    return None


def content_uidls(candidates: Iterable[Candidate]) -> Iterator[Candidate]:
    """UIDLs for the messages without one, made from their content: the same file imported again gets the same
    UIDL (so it is stored once), and identical copies in one source are told apart by their count."""
    seen: Counter[str] = Counter()
    for candidate in candidates:
        if candidate.uidl is not None or candidate.data is None:
            yield candidate
            continue
        digest = base64.b32encode(hashlib.sha256(candidate.data).digest()[:20]).decode()
        seen[digest] += 1
        uidl = digest if seen[digest] == 1 else f"{digest}-{seen[digest]}"
        yield Candidate(candidate.origin, uidl, candidate.data)


def read_file(path: Path) -> tuple[bytes | None, str | None]:
    """The bytes of a message file, or why it cannot be used."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        return None, f"cannot be read: {exc.strerror or exc}"
    return data, problem_of(data)
