"""services/pop3/state.py: which client addresses are loopback."""

from __future__ import annotations

import pytest

from services.pop3.state import is_loopback


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
