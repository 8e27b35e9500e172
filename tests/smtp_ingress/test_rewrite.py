"""The content filter's header changes: fields added, removed and a Subject replaced, in memory and spooled."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from services.smtp_ingress.rewrite import apply, edit_block, header_field
from shared.spool import MessageSpool

MESSAGE = (
    b"From: a@remote.test\r\nX-Spam: Yes\r\nSubject: cheap\r\n pills\r\nX-Other: 1\r\n  continued\r\n"
    b"To: b@local.test\r\n\r\nX-Spam: in the body stays\r\n"
)


def test_fields_are_removed_with_their_continuations_and_subject_replaced() -> None:
    block = MESSAGE.split(b"\r\n\r\n")[0] + b"\r\n"
    edited = edit_block(block, frozenset({"x-spam", "x-other"}), "*** SPAM *** cheap pills")
    assert edited == b"From: a@remote.test\r\nSubject: *** SPAM *** cheap pills\r\nTo: b@local.test\r\n"


def test_apply_in_memory_and_spooled_alike() -> None:
    add = [("X-Spamd-Result", "default: False [7.30 / 15.00];\n\tRDNS_NONE(1.00)"), ("X-Spam", "Yes")]
    results = []
    for limit in (len(MESSAGE) * 2, 8):  # the second spool moves to a file after 8 bytes
        spool = MessageSpool(memory_limit=limit)
        for start in range(0, len(MESSAGE), 7):
            spool.write(MESSAGE[start : start + 7])
        changed = apply(spool, add, frozenset({"x-spam"}), None, None)
        results.append(changed.read())
        changed.close()
    assert results[0] == results[1]
    head, body = results[0].split(b"\r\n\r\n", 1)
    assert head.startswith(b"X-Spamd-Result: default: False [7.30 / 15.00];\r\n\tRDNS_NONE(1.00)\r\nX-Spam: Yes\r\n")
    assert head.count(b"X-Spam: Yes") == 1 and b"Subject: cheap\r\n pills" in head
    assert body == b"X-Spam: in the body stays\r\n"


def test_nothing_to_change_returns_the_same_spool() -> None:
    spool = MessageSpool.of(MESSAGE)
    assert apply(spool, [], frozenset(), None, None) is spool


def test_non_ascii_values_become_encoded_words() -> None:
    assert header_field("Subject", "*** SPAM *** déjà vu").startswith(b"Subject: =?utf-8?")


@given(st.text(max_size=300), st.text(max_size=40))
def test_a_field_never_ends_the_header_block_early(value: str, name: str) -> None:
    field = header_field(name, value)
    assert field.endswith(b"\r\n")
    # Every line break is CRLF followed by folding whitespace, except the last: no bare CR or LF, no empty line.
    inner = field[:-2]
    assert re.search(rb"\r(?!\n)|(?<!\r)\n", inner) is None
    assert all(line[:1] in (b" ", b"\t") for line in inner.split(b"\r\n")[1:])
    assert b":" in field.split(b"\r\n")[0]
