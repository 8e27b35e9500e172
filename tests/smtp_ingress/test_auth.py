"""services/smtp_ingress/auth.py: decoding AUTH PLAIN responses."""

from __future__ import annotations

from services.smtp_ingress.auth import decode_initial_response, parse_plain


def test_plain_parsing() -> None:
    assert decode_initial_response("=") == b""
    assert decode_initial_response("!!") is None
    assert parse_plain(b"\x00alice@local.test\x00pw") == ("alice@local.test", "pw")
    assert parse_plain(b"alice@local.test\x00alice@local.test\x00pw") == ("alice@local.test", "pw")
    assert parse_plain(b"bob@local.test\x00alice@local.test\x00pw") is None
    assert parse_plain(b"\x00\x00pw") is None
