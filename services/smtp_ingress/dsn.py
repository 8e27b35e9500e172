"""DSN parameters at MAIL and RCPT (RFC 3461 §4), taken off the command before aiosmtpd reads the rest.

aiosmtpd upper-cases every parameter and answers 555 to any it does not know; ENVID and ORCPT are case-sensitive
xtext, so ours are taken from the argument as the client wrote them, checked here, and only the rest (SIZE, BODY,
SMTPUTF8) goes on to aiosmtpd's MAIL and RCPT.
"""

from __future__ import annotations

import re

from shared.dsn import DSNError, parse_envid, parse_notify, parse_orcpt, parse_ret

MAIL_PARAMETERS = frozenset({"RET", "ENVID"})
RCPT_PARAMETERS = frozenset({"NOTIFY", "ORCPT"})
# RFC 5321 §4.1.2 esmtp-param: esmtp-keyword ["=" esmtp-value]; what follows the path is made of these.
_PARAMETER = re.compile(r"([A-Za-z0-9][A-Za-z0-9-]*)(?:=(\S+))?")


def take(arg: str | None, names: frozenset[str]) -> tuple[str | None, dict[str, str]]:
    """`arg` without the parameters named `names`, and those parameters (name upper-cased, value as written).

    The parameters are the words after the path, so they are taken from the end: a word that is not
    `keyword[=value]` is the path (or part of it) and ends the search. DSNError for one given twice or without
    a value.
    """
    if not arg:
        return arg, {}
    words = arg.split(" ")
    found: dict[str, str] = {}
    kept: list[str] = []
    while len(words) > 1:
        match = _PARAMETER.fullmatch(words[-1])
        if match is None:
            if words[-1]:
                break
            words.pop()  # a doubled space: aiosmtpd's split() ignores it too
            continue
        words.pop()
        name = match[1].upper()
        if name not in names:
            kept.append(match[0])
            continue
        if name in found:
            raise DSNError(f"{name} given twice")
        if match[2] is None:
            raise DSNError(f"{name} needs a value")
        found[name] = match[2]
    if not found:
        return arg, {}
    return " ".join(words + kept[::-1]), found


def mail_request(found: dict[str, str]) -> tuple[str, str]:
    """(RET, ENVID decoded) of MAIL's DSN parameters; DSNError when one is malformed."""
    ret = parse_ret(found["RET"]) if "RET" in found else ""
    envid = parse_envid(found["ENVID"]) if "ENVID" in found else ""
    return ret, envid


def rcpt_request(found: dict[str, str]) -> tuple[str, str]:
    """(NOTIFY, ORCPT as "type;address") of RCPT's DSN parameters; DSNError when one is malformed."""
    notify = parse_notify(found["NOTIFY"]) if "NOTIFY" in found else ""
    orcpt = parse_orcpt(found["ORCPT"]) if "ORCPT" in found else ""
    return notify, orcpt
