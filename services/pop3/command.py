"""POP3 commands as typed values and the parser that turns one command line into one of them (RFC 1939 §3)."""

from __future__ import annotations

import re
from dataclasses import dataclass

# RFC 1939 §3: arguments are at most 40 characters; RFC 2449 §4 allows longer ones for extensions, and SASL
# initial responses (RFC 5034 §4) are longer still, so only message numbers get the strict check.
MAX_NUMBER_DIGITS = 9


class ParseError(ValueError):
    """The line is not a well-formed command; `reply_text` is safe to send after `-ERR `."""

    def __init__(self, reply_text: str, verb: str = "INVALID") -> None:
        super().__init__(reply_text)
        self.reply_text = reply_text
        self.verb = verb


@dataclass(frozen=True)
class User:
    name: str


@dataclass(frozen=True)
class Pass:
    password: str


@dataclass(frozen=True)
class Apop:
    pass


@dataclass(frozen=True)
class Auth:
    mechanism: str | None
    initial_response: str | None = None


@dataclass(frozen=True)
class Stls:
    pass


@dataclass(frozen=True)
class Capa:
    pass


@dataclass(frozen=True)
class Utf8:
    pass


@dataclass(frozen=True)
class Stat:
    pass


@dataclass(frozen=True)
class List:
    msg: int | None = None


@dataclass(frozen=True)
class Uidl:
    msg: int | None = None


@dataclass(frozen=True)
class Retr:
    msg: int


@dataclass(frozen=True)
class Top:
    msg: int
    lines: int


@dataclass(frozen=True)
class Dele:
    msg: int


@dataclass(frozen=True)
class Rset:
    pass


@dataclass(frozen=True)
class Noop:
    pass


@dataclass(frozen=True)
class Quit:
    pass


Command = User | Pass | Apop | Auth | Stls | Capa | Utf8 | Stat | List | Uidl | Retr | Top | Dele | Rset | Noop | Quit


def verb_of(command: Command) -> str:
    """The keyword of a command, for logs and the bounded `command` metric label."""
    return type(command).__name__.upper()


def _number(text: str, verb: str) -> int:
    if not text.isascii() or not text.isdigit() or len(text) > MAX_NUMBER_DIGITS:
        raise ParseError("Invalid message number", verb)
    return int(text)


def _args(verb: str, args: list[str], low: int, high: int) -> list[str]:
    if not low <= len(args) <= high:
        raise ParseError(f"Wrong number of arguments for {verb}", verb)
    return args


# C0 controls and DEL (a pattern: a per-character generator cost more than the rest of parsing a RETR line).
_CONTROL = re.compile("[\x00-\x1f\x7f]")


def decode_line(raw: bytes) -> str:
    """The text of a client line without its line end; control characters and bad UTF-8 are syntax errors."""
    line = raw.removesuffix(b"\n").removesuffix(b"\r")
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        raise ParseError("Invalid UTF-8 in command") from None
    if _CONTROL.search(text) is not None:
        raise ParseError("Control characters are not allowed in commands")
    return text


def parse(raw: bytes) -> Command:
    """One command line (with or without its CRLF) → a Command, or ParseError."""
    text = decode_line(raw)
    keyword, _, rest = text.partition(" ")
    verb = keyword.upper()
    if not verb:
        raise ParseError("Empty command")
    label = verb if verb in KNOWN_VERBS else "UNKNOWN"
    # RFC 1939 §7: PASS takes the rest of the line, spaces included, as the password.
    if verb == "PASS":
        if not rest:
            raise ParseError("PASS needs a password", verb)
        return Pass(rest)
    # Trailing spaces are forgiven (some clients send them); empty arguments in between are not.
    rest = rest.rstrip(" ")
    args = rest.split(" ") if rest else []
    if any(not arg for arg in args):
        raise ParseError("Arguments are separated by a single space", label)
    match verb:
        case "USER":
            return User(_args(verb, args, 1, 1)[0])
        case "AUTH":
            _args(verb, args, 0, 2)
            return Auth(args[0].upper() if args else None, args[1] if len(args) > 1 else None)
        case "LIST" | "UIDL":
            _args(verb, args, 0, 1)
            msg = _number(args[0], verb) if args else None
            return List(msg) if verb == "LIST" else Uidl(msg)
        case "RETR" | "DELE":
            msg = _number(_args(verb, args, 1, 1)[0], verb)
            return Retr(msg) if verb == "RETR" else Dele(msg)
        case "TOP":
            _args(verb, args, 2, 2)
            return Top(_number(args[0], verb), _number(args[1], verb))
        case "APOP":
            return Apop()
    if verb in _SIMPLE:
        _args(verb, args, 0, 0)
        return _SIMPLE[verb]()
    raise ParseError("Unknown command", label)


KNOWN_VERBS = frozenset(
    {"USER", "PASS", "APOP", "AUTH", "LIST", "UIDL", "RETR", "DELE", "TOP", "STLS", "CAPA", "UTF8", "STAT", "RSET"}
    | {"NOOP", "QUIT"}
)

_SIMPLE: dict[str, type[Stls | Capa | Utf8 | Stat | Rset | Noop | Quit]] = {
    "STLS": Stls,
    "CAPA": Capa,
    "UTF8": Utf8,
    "STAT": Stat,
    "RSET": Rset,
    "NOOP": Noop,
    "QUIT": Quit,
}
