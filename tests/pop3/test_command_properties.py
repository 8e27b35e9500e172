"""Properties of the POP3 command parser: any bytes give a command or a ParseError; commands round-trip."""

from __future__ import annotations

from hypothesis import example, given, settings
from hypothesis import strategies as st

from services.pop3 import command as c
from services.pop3.command import KNOWN_VERBS, MAX_NUMBER_DIGITS, ParseError, parse

VERBS = sorted(KNOWN_VERBS)
# An argument: printable, no space, no control character (what a client may put between single spaces).
word = st.text(st.characters(min_codepoint=0x21, exclude_categories=["Cs", "Cc"]), min_size=1, max_size=30)
number = st.integers(0, 10**MAX_NUMBER_DIGITS - 1)
line_end = st.sampled_from([b"\r\n", b"\n", b""])


def render(command: c.Command) -> str:
    """The line a client sends for `command` (the inverse of parse, for commands that keep their arguments)."""
    match command:
        case c.User(name):
            return f"USER {name}"
        case c.Pass(password):
            return f"PASS {password}"
        case c.Auth(mechanism, initial):
            return " ".join(part for part in ("AUTH", mechanism, initial) if part)
        case c.List(msg) | c.Uidl(msg):
            return c.verb_of(command) + ("" if msg is None else f" {msg}")
        case c.Retr(msg) | c.Dele(msg):
            return f"{c.verb_of(command)} {msg}"
        case c.Top(msg, lines):
            return f"TOP {msg} {lines}"
    return c.verb_of(command)


commands = st.one_of(
    st.builds(c.User, word),
    # RFC 1939 §7: the password is the rest of the line, spaces included (not at its start: that would be empty).
    st.builds(
        c.Pass,
        st.builds(
            "{}{}".format,
            word,
            st.text(st.characters(min_codepoint=0x20, exclude_categories=["Cs", "Cc"]), max_size=20),
        ),
    ),
    st.builds(c.Auth, st.none()),
    st.builds(c.Auth, word.map(str.upper), st.one_of(st.none(), word)),
    st.builds(c.List, st.one_of(st.none(), number)),
    st.builds(c.Uidl, st.one_of(st.none(), number)),
    st.builds(c.Retr, number),
    st.builds(c.Dele, number),
    st.builds(c.Top, number, number),
    st.sampled_from([c.Stls(), c.Capa(), c.Utf8(), c.Stat(), c.Rset(), c.Noop(), c.Quit()]),
)


@settings(max_examples=500, deadline=None)
@given(command=commands, end=line_end, upper=st.booleans())
def test_every_command_round_trips(command: c.Command, end: bytes, upper: bool) -> None:
    verb, space, rest = render(command).partition(" ")
    line = (verb.upper() if upper else verb.lower()) + space + rest
    assert parse(line.encode() + end) == command


@settings(max_examples=1000, deadline=None)
@given(
    raw=st.one_of(
        st.binary(max_size=60),
        st.builds(
            lambda verb, args: (verb + " " + " ".join(args)).encode(),
            st.sampled_from([*VERBS, "", "X", "RETR1", "top"]),
            st.lists(st.one_of(word, st.sampled_from(["", "0", "-1", "1e3", "٣", "²", "9" * 12])), max_size=4),
        ),
    )
)
@example(b"")
@example(b"\r\n")
@example(b"PASS \r\n")
@example(b"\xef\xbb\xbfUSER a\r\n")
def test_any_line_is_a_command_or_a_parse_error(raw: bytes) -> None:
    try:
        parsed = parse(raw)
    except ParseError as error:
        assert error.reply_text and "\r" not in error.reply_text and "\n" not in error.reply_text
        assert error.verb in KNOWN_VERBS | {"INVALID", "UNKNOWN"}  # a bounded metric label
        return
    assert c.verb_of(parsed) in KNOWN_VERBS
    for field in ("msg", "lines"):
        value = getattr(parsed, field, None)
        assert value is None or 0 <= value < 10**MAX_NUMBER_DIGITS
