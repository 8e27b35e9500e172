"""services/delivery/mx.py: MX hosts in preference order, equal preferences shuffled."""

from __future__ import annotations

import random

from services.delivery.mx import MailHost, order_mx


def test_mx_order_sorts_and_shuffles_equal_preferences() -> None:
    records = [(20, "c"), (10, "a"), (10, "b"), (30, "d")]
    orders = {tuple(h.name for h in order_mx(records, random.Random(seed))) for seed in range(40)}
    assert orders == {("a", "b", "c", "d"), ("b", "a", "c", "d")}
    assert order_mx([(5, "x")]) == [MailHost("x", 5)]
