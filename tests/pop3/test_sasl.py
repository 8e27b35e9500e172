"""services/pop3/sasl.py: decoding SASL PLAIN and base64 responses."""

from __future__ import annotations

import base64

import pytest

from services.pop3 import sasl


def test_sasl_plain() -> None:
    assert sasl.decode_plain(b"\0alice@x\0pw") == ("alice@x", "pw")
    assert sasl.decode_plain(b"alice@x\0alice@x\0pw") == ("alice@x", "pw")
    for bad in (b"bob@x\0alice@x\0pw", b"alice@x\0pw", b"\0\0pw", b"\0a\0", b"\0a\0\xff"):
        with pytest.raises(sasl.SaslError):
            sasl.decode_plain(bad)


def test_sasl_base64() -> None:
    assert sasl.decode_response(base64.b64encode(b"hi")) == b"hi"
    assert sasl.decode_response("=") == b""
    for bad in ("!!!", "aGk", "aGk=x"):
        with pytest.raises(sasl.SaslError):
            sasl.decode_response(bad)
    assert base64.b64decode(sasl.LOGIN_USERNAME_PROMPT) == b"Username:"
