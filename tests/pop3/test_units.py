"""Small units: failure delays, SASL decoding, loopback detection, capability lists."""

from __future__ import annotations

import base64

import pytest

from services.pop3 import sasl
from services.pop3.state import is_loopback
from services.pop3.throttle import MAX_TRACKED, FailureDelays


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_failure_delay_grows_per_ip_and_per_account_and_is_forgotten() -> None:
    clock = Clock()
    delays = FailureDelays(base=1.0, maximum=8.0, forget_after=60, clock=clock)
    assert delays.delay("192.0.2.1", "a@x") == 0
    assert [delays.record_failure("192.0.2.1", f"user{i}@x") for i in range(6)] == [1, 2, 4, 8, 8, 8]
    # Per account, from many IPs (a distributed guess at one password).
    assert [delays.record_failure(f"198.51.100.{i}", "victim@x") for i in range(3)] == [1, 2, 4]
    # A success clears the account's count but not the guessing IP's.
    delays.record_success("victim@x")
    assert delays.delay("203.0.113.9", "victim@x") == 0
    assert delays.delay("192.0.2.1", "someone@x") == 8
    clock.now += 61
    assert delays.delay("192.0.2.1", "someone@x") == 0


def test_failure_delay_memory_is_bounded_and_can_be_off() -> None:
    delays = FailureDelays(base=0.0, maximum=1.0)
    for i in range(MAX_TRACKED + 50):
        assert delays.record_failure(f"10.0.{i // 256}.{i % 256}", "a@x") == 0
    assert len(delays._failures) <= MAX_TRACKED


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
