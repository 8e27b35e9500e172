"""Every reply text in aiosmtpd's source either maps to one of ours or provably never reaches the wire.

The texts are read from aiosmtpd's installed `smtp.py` (string literals, f-strings, `.format` templates and
concatenations whose text starts like a reply), so an upgrade that changes or adds a text fails here until
replies.py (or the reason below) covers it.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import re
from collections.abc import Iterator
from typing import Any

import aiosmtpd.smtp
from aiosmtpd.smtp import SMTP

from services.smtp_ingress import replies
from services.smtp_ingress.session import IngressSMTP, SessionRegistry
from shared.limits import ConnectionLimiter

_REPLY_START = re.compile(r"^(\{\}|[1-5]\d\d)[ -]")
# aiosmtpd appends this to MAIL's and RCPT's syntax reply after EHLO (`syntaxerr += ...`).
_EXTENDED_SYNTAX = " [SP <mail-parameters>]"

# aiosmtpd's texts that are never sent as they are, and why. Each must still exist in aiosmtpd (checked below), so
# that this list cannot outlive what it explains.
NEVER_SENT = {
    ("_handle_client", '500 Error: command "{}" not recognized'): "_CommandTable answers every verb it does not know",
    ("_handle_client", "502 5.5.1 Too many unrecognized commands, goodbye."): "likewise: aiosmtpd sees no unknown verb",
    ("_handle_client", "421 4.7.0 {} sent too many times"): "command_call_limit is not set",
    ("_handle_client", "500 Error: ({}) {}"): "IngressSMTP.handle_exception never raises",
    ("_handle_client", "500 Error: Cannot describe error"): "IngressSMTP.handle_exception never raises",
    ("smtp_HELO", "250 {}"): "the handler's handle_HELO answers",
    # aiosmtpd hands its EHLO lines to the handler's handle_EHLO, which returns our reply made from them.
    ("smtp_EHLO", "250-{}"): "handle_EHLO",
    ("smtp_EHLO", "250-SIZE {}"): "handle_EHLO",
    ("smtp_EHLO", "250-8BITMIME"): "handle_EHLO",
    ("smtp_EHLO", "250-SMTPUTF8"): "handle_EHLO",
    ("smtp_EHLO", "250-STARTTLS"): "handle_EHLO",
    ("smtp_EHLO", "250-AUTH {}"): "handle_EHLO",
    ("smtp_EHLO", "250 HELP"): "handle_EHLO",
    # The handler's auth_PLAIN and auth_LOGIN replace aiosmtpd's built-in mechanisms and ask through
    # IngressSMTP.challenge, so aiosmtpd's challenge_auth is never called.
    ("challenge_auth", "334 {}"): "IngressSMTP.challenge",
    ("challenge_auth", "501 5.7.0 Auth aborted"): "IngressSMTP.challenge",
    ("challenge_auth", "501 5.5.2 Can't decode base64"): "IngressSMTP.challenge",
    ("auth_PLAIN", "501 5.5.2 Can't split auth value"): "the handler's auth_PLAIN",
    ("auth_PLAIN", "501 5.5.2 Can't decode base64"): "the handler's auth_PLAIN",
    ("auth_LOGIN", "501 5.5.2 Can't decode base64"): "the handler's auth_LOGIN",
}
# Templates whose every value is known: each expansion must map.
EXPANSIONS = {"503 Error: send {} first": ("HELO", "EHLO")}


def _template(node: ast.AST) -> str | None:
    """The text of a string expression, with `{}` where a value goes; None for anything else."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str | bytes):
        return node.value.decode() if isinstance(node.value, bytes) else node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(str(part.value) if isinstance(part, ast.Constant) else "{}" for part in node.values)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "format":
        return _template(node.func.value)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = _template(node.left), _template(node.right)
        if left is None and right is None:
            return None
        return (left if left is not None else "{}") + (right if right is not None else "{}")
    return None


def _strings(node: ast.AST) -> Iterator[str]:
    """The outermost string expressions under `node`."""
    text = _template(node)
    if text is not None:
        yield text
        return
    for child in ast.iter_child_nodes(node):
        yield from _strings(child)


def aiosmtpd_texts() -> set[tuple[str, str]]:
    """(method of aiosmtpd's SMTP, reply text or template) for every reply-like text in its source."""
    tree = ast.parse(inspect.getsource(aiosmtpd.smtp))
    [smtp] = [node for node in tree.body if isinstance(node, ast.ClassDef) and node.name == "SMTP"]
    return {
        (method.name, text)
        for method in smtp.body
        if isinstance(method, ast.FunctionDef | ast.AsyncFunctionDef)
        for text in _strings(method)
        if _REPLY_START.match(text)
    }


# aiosmtpd's methods IngressSMTP replaces (without calling them): their texts never run.
REPLACED = {"push", "handle_exception", "smtp_DATA", "smtp_HELP", "smtp_VRFY"}


def test_replaced_methods_are_replaced() -> None:
    for name in REPLACED:
        assert name in vars(SMTP) and name in vars(IngressSMTP), name
        assert "super()" not in inspect.getsource(vars(IngressSMTP)[name]), name


def _command(method: str) -> str:
    return method.removeprefix("smtp_") if method.startswith("smtp_") else "other"


class _Handler:
    async def auth_PLAIN(self, server: Any, args: list[str]) -> Any:
        return None

    async def auth_LOGIN(self, server: Any, args: list[str]) -> Any:
        return None


def test_every_text_aiosmtpd_can_send_maps_to_ours() -> None:
    unmapped = []
    for method, text in sorted(aiosmtpd_texts()):
        if method in REPLACED or (method, text) in NEVER_SENT or text.startswith("220 {} {}"):
            continue
        expansions = [text.replace("{}", value) for value in EXPANSIONS.get(text, ())] or [text]
        for expanded in expansions:
            if "{}" in expanded or replies.from_aiosmtpd(expanded, _command(method)) is None:
                unmapped.append((method, expanded))
    assert unmapped == []


def test_the_reasons_for_unsent_texts_still_hold() -> None:
    texts = aiosmtpd_texts()
    assert [key for key in NEVER_SENT if key not in texts] == []
    assert [template for template in EXPANSIONS if not any(text == template for _, text in texts)] == []
    assert ("_handle_client", "220 {} {}") in texts  # the greeting: mapped per listener (next test)


async def test_the_greeting_maps_per_listener_and_builtin_auth_is_replaced() -> None:
    registry = SessionRegistry(ConnectionLimiter(10, 10), (), 3, 60.0)
    session = IngressSMTP(
        _Handler(),
        registry=registry,
        listener="smtp",
        hostname="mx.example.test",
        ident=replies.IDENT,
        loop=asyncio.get_running_loop(),
    )
    greeting = replies.greeting("mx.example.test")
    assert session._from_aiosmtpd(f"220 mx.example.test {replies.IDENT}") == greeting
    assert str(greeting) == "220 mx.example.test ESMTP Postroom"
    assert not any(mechanism.is_builtin for mechanism in session._auth_methods.values())


def test_every_table_entry_is_a_text_of_aiosmtpd() -> None:
    texts = {text for _, text in aiosmtpd_texts()}
    texts |= {text.replace("{}", value) for text, values in EXPANSIONS.items() for value in values}
    texts |= {text + _EXTENDED_SYNTAX for text in texts if text.startswith(("501 Syntax: MAIL", "501 Syntax: RCPT"))}
    keys = set(replies.AIOSMTPD_TEXTS) | {text for _, text in replies.AIOSMTPD_TEXTS_BY_COMMAND}
    assert sorted(keys - texts) == []


def test_a_text_no_table_knows_still_gets_a_well_formed_reply() -> None:
    assert replies.unforeseen("451 something new") == replies.Reply(451, "4.0.0", "something new")
    assert replies.unforeseen("550 5.7.1 Go away") == replies.Reply(550, "5.7.1", "Go away")
    assert replies.unforeseen("250 OK then") == replies.Reply(250, "2.0.0", "OK then")
    assert replies.unforeseen("garbage") is replies.TEMPORARY_FAILURE
