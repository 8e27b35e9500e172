"""services/delivery/retry.py: the retry schedule, its units and its last step repeated."""

from __future__ import annotations

import pytest

from services.delivery.retry import delay_for, expired
from shared.settings import parse_retry_schedule as parse_schedule


def test_schedule_units_and_repeating_last_step() -> None:
    schedule = parse_schedule("30s, 5m,1h,2d")
    assert schedule == (30, 300, 3600, 172800)
    assert [delay_for(schedule, n) for n in (1, 2, 4, 5, 40)] == [30, 300, 172800, 172800, 172800]
    assert expired(0, 5 * 86400, 5 * 86400) and not expired(0, 100, 5 * 86400)
    for bad in ("", "1x", "0s", "1.5s", "-1m"):
        with pytest.raises(ValueError):
            parse_schedule(bad)
