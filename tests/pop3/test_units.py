"""Small units: SASL decoding, loopback detection, capability lists."""

from __future__ import annotations

import base64

import pytest

from services.pop3 import sasl
from services.pop3.state import is_loopback


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


@pytest.mark.parametrize(
    ("ip", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.9.9.9", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),
        ("192.0.2.1", False),
        ("", False),
        ("::ffff:192.0.2.1", False),
    ],
)
def test_loopback(ip: str, loopback: bool) -> None:
    assert is_loopback(ip) is loopback
