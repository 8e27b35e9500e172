"""The command parser on its own: every command's syntax, arity, numbers, case and bad input."""

from __future__ import annotations

import pytest

from services.pop3 import command as c
from services.pop3.command import ParseError, parse


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b"USER alice@pop.test\r\n", c.User("alice@pop.test")),
        (b"user alice@pop.test\r\n", c.User("alice@pop.test")),
        (b"PASS secret with  spaces \r\n", c.Pass("secret with  spaces ")),
        (b"APOP alice 0123456789abcdef0123456789abcdef\r\n", c.Apop()),
        (b"AUTH\r\n", c.Auth(None)),
        (b"AUTH plain\r\n", c.Auth("PLAIN")),
        (b"AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n", c.Auth("PLAIN", "AGFsaWNlAHNlY3JldA==")),
        (b"AUTH PLAIN =\r\n", c.Auth("PLAIN", "=")),
        (b"STLS\r\n", c.Stls()),
        (b"CAPA\r\n", c.Capa()),
        (b"UTF8\r\n", c.Utf8()),
        (b"STAT\r\n", c.Stat()),
        (b"LIST\r\n", c.List()),
        (b"LIST 7\r\n", c.List(7)),
        (b"UIDL\r\n", c.Uidl()),
        (b"UIDL 2\r\n", c.Uidl(2)),
        (b"RETR 1\r\n", c.Retr(1)),
        (b"TOP 1 0\r\n", c.Top(1, 0)),
        (b"DELE 3\r\n", c.Dele(3)),
        (b"RSET\r\n", c.Rset()),
        (b"NOOP\r\n", c.Noop()),
        (b"QUIT\r\n", c.Quit()),
        (b"QUIT\n", c.Quit()),  # a bare LF line end is accepted from clients
        (b"STAT ", c.Stat()),  # trailing spaces forgiven
        ("USER jörg@pop.test\r\n".encode(), c.User("jörg@pop.test")),
    ],
)
def test_parses(line: bytes, expected: c.Command) -> None:
    assert parse(line) == expected


@pytest.mark.parametrize(
    ("line", "verb"),
    [
        (b"\r\n", "INVALID"),
        (b"HELO x\r\n", "UNKNOWN"),
        (b"RETR\r\n", "RETR"),
        (b"RETR x\r\n", "RETR"),
        (b"RETR -1\r\n", "RETR"),
        (b"RETR 1 2\r\n", "RETR"),
        (b"RETR 1234567890\r\n", "RETR"),
        (b"RETR \xd9\xa3\r\n", "RETR"),  # Arabic-Indic digit: isdigit() but not a POP3 number
        (b"TOP 1\r\n", "TOP"),
        (b"LIST  1\r\n", "LIST"),
        (b"STAT 1\r\n", "STAT"),
        (b"USER\r\n", "USER"),
        (b"USER a b\r\n", "USER"),
        (b"PASS\r\n", "PASS"),
        (b"PASS \r\n", "PASS"),
        (b"AUTH PLAIN x y\r\n", "AUTH"),
        (b"NOOP\x00\r\n", "INVALID"),
        (b"USER a\rb\r\n", "INVALID"),
        (b"USER \xff\r\n", "INVALID"),
    ],
)
def test_rejects(line: bytes, verb: str) -> None:
    with pytest.raises(ParseError) as caught:
        parse(line)
    assert caught.value.verb == verb
    assert caught.value.reply_text


def test_verb_labels_are_bounded() -> None:
    assert c.verb_of(c.Retr(1)) == "RETR"
    assert {c.verb_of(t()) for t in (c.Stat, c.Noop, c.Quit, c.Capa)} <= c.KNOWN_VERBS
