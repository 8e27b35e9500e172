"""Decoding of SASL client responses for PLAIN (RFC 4616) and LOGIN (draft-murchison-sasl-login)."""

from __future__ import annotations

import base64
import binascii

# RFC 5034 §4: a lone "*" cancels the exchange; "=" is an empty response.
CANCEL = b"*"
MECHANISMS = ("PLAIN", "LOGIN")
LOGIN_USERNAME_PROMPT = base64.b64encode(b"Username:").decode()
LOGIN_PASSWORD_PROMPT = base64.b64encode(b"Password:").decode()


class SaslError(ValueError):
    """The client's response is not valid for the mechanism."""


def decode_response(text: bytes | str) -> bytes:
    """Strict base64 of one client response; "=" stands for an empty one."""
    data = text.encode() if isinstance(text, str) else text
    data = data.strip(b"\r\n")
    if data == b"=":
        return b""
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise SaslError("invalid base64") from None


def decode_plain(message: bytes) -> tuple[str, str]:
    """(authentication identity, password) from `[authzid] NUL authcid NUL passwd`.

    An authorization identity different from the authentication identity (acting as another user) is refused.
    """
    parts = message.split(b"\0")
    if len(parts) != 3:
        raise SaslError("PLAIN needs three NUL-separated fields")
    try:
        authzid, authcid, password = (part.decode("utf-8") for part in parts)
    except UnicodeDecodeError:
        raise SaslError("PLAIN fields must be UTF-8") from None
    if not authcid or not password:
        raise SaslError("empty PLAIN identity or password")
    if authzid and authzid.lower() != authcid.lower():
        raise SaslError("proxy authorization is not supported")
    return authcid, password


def decode_text(message: bytes) -> str:
    """A LOGIN username or password: UTF-8 without NUL."""
    try:
        text = message.decode("utf-8")
    except UnicodeDecodeError:
        raise SaslError("not UTF-8") from None
    if "\0" in text:
        raise SaslError("NUL in LOGIN field")
    return text
