"""The connection limiter both mail protocols share: global and per-IP caps, slots held while a PROXY header is read."""

from __future__ import annotations

from shared.limits import ConnectionLimiter, Refusal


def test_global_and_per_ip_caps_with_exemption() -> None:
    limiter = ConnectionLimiter(total=3, per_ip=1)
    assert limiter.admit("192.0.2.1") is None
    assert limiter.admit("192.0.2.1") is Refusal.PER_IP
    assert limiter.admit("127.0.0.1", exempt=True) is None and limiter.admit("127.0.0.1", exempt=True) is None
    assert limiter.admit("198.51.100.1") is Refusal.TOTAL
    limiter.release("192.0.2.1")
    assert limiter.admit("198.51.100.1") is None


def test_reservations_count_globally_and_are_charged_to_the_revealed_client() -> None:
    limiter = ConnectionLimiter(total=3, per_ip=1)
    first, second, third = (limiter.reserve() for _ in range(3))
    assert first is not None and second is not None and third is not None
    assert limiter.reserve() is None  # the global cap holds while headers are awaited
    assert limiter.admit("192.0.2.9") is Refusal.TOTAL
    assert limiter.admit("192.0.2.1", reservation=first) is None
    assert limiter.admit("192.0.2.1", reservation=second) is Refusal.PER_IP  # refused: its slot is given back
    assert not second.held and limiter.open == 2
    limiter.cancel(first)  # no-op: the slot belongs to the admitted connection now
    assert limiter.open == 2
    limiter.cancel(third)
    limiter.cancel(third)  # twice is harmless
    assert limiter.open == 1 and limiter.by_ip == {"192.0.2.1": 1}
    limiter.release("192.0.2.1")
    assert limiter.open == 0 and limiter.by_ip == {}
