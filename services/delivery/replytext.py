"""Remote SMTP replies turned into readable text where they enter our outcomes, whatever bytes the MTA sent."""

from __future__ import annotations

import re

# aiosmtplib decodes replies as UTF-8 with `surrogateescape`: each byte that is not part of valid UTF-8 becomes a
# lone surrogate U+DC80..U+DCFF, which no encoder takes (a bounce, a log line, an AMQP header would raise).
_ESCAPED = re.compile("[\udc80-\udcff]+")
_SURROGATE = re.compile("[\ud800-\udfff]")
# C0 and C1 controls, DEL, and the Unicode line and paragraph separators: nothing that can break a line or a
# header field survives (a multi-line reply becomes one line).
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]+")
# A reply longer than this is cut: enough for any real diagnostic, and it bounds what travels on in traces,
# retry headers and bounces whatever a hostile server sends.
MAX_LENGTH = 1000


def _legacy(match: re.Match[str]) -> str:
    """Bytes that were not UTF-8, read as Windows-1252 (the superset of Latin-1 most such servers send), so that
    `M\\xfcller` reads Müller; the five bytes cp1252 leaves undefined are C1 controls in Latin-1 and are dropped."""
    return bytes(ord(c) - 0xDC00 for c in match.group()).decode("cp1252", "ignore")


def readable(text: str | bytes) -> str:
    """One line of printable text that encodes as UTF-8: valid UTF-8 kept, other bytes read as cp1252, control
    characters and runs of white space made one space, at most MAX_LENGTH characters."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "surrogateescape")
    text = _ESCAPED.sub(_legacy, text)
    # A surrogate left now did not come from the wire (str from elsewhere): it cannot be encoded, so it is replaced.
    text = _SURROGATE.sub("\ufffd", text)
    text = " ".join(_CONTROL.sub(" ", text).split())
    return text if len(text) <= MAX_LENGTH else text[: MAX_LENGTH - 3] + "..."


def reply(code: int, message: str | bytes) -> str:
    """An SMTP reply as we quote it in outcomes, traces and bounces: `550 5.1.1 text`."""
    return f"{code} {readable(message)}"
