"""Properties of the retry schedule: any text is a schedule of whole seconds or a ValueError; delays follow it."""

from __future__ import annotations

from hypothesis import example, given, settings
from hypothesis import strategies as st

from services.delivery.config import DeliverySettings
from services.delivery.retry import delay_for
from services.store.config import StoreSettings
from shared.errors import ConfigError
from shared.settings import load_settings
from shared.settings import parse_retry_schedule as parse_schedule

step = st.builds("{}{}".format, st.integers(1, 10**6), st.sampled_from(["", "s", "m", "h", "d", "S", "M"]))
schedule_text = st.one_of(
    st.lists(step, min_size=1, max_size=8).map(",".join),
    st.text("0123456789.,smhd -+einfa ", max_size=30),
    st.text(max_size=30),
)


@settings(max_examples=500, deadline=None)
@given(text=schedule_text)
@example("inf")
@example("nan")
@example("1s,,2s,")
@example("0.5s")
@example(",")
def test_any_text_is_a_schedule_of_whole_seconds_or_a_value_error(text: str) -> None:
    try:
        steps = parse_schedule(text)
    except ValueError as error:
        assert "\n" not in str(error)
        return
    assert steps and all(isinstance(s, int) and s >= 1 for s in steps)


@settings(max_examples=200, deadline=None)
@given(text=schedule_text)
@example("0.5s")
@example("1.5s,2s")
def test_store_and_delivery_read_the_schedule_alike(text: str) -> None:
    """POSTROOM_RETRY_SCHEDULE names the delivery's delay queues and the store's report of them: one reading."""
    readings = []
    for cls in (DeliverySettings, StoreSettings):
        try:
            readings.append(load_settings(cls, retry_schedule=text).retry_schedule)  # type: ignore[attr-defined]
        except ConfigError as error:
            assert "POSTROOM_RETRY_SCHEDULE" in str(error)
            readings.append(None)
    assert readings[0] == readings[1]


@settings(max_examples=300, deadline=None)
@given(steps=st.lists(st.integers(1, 10**6), min_size=1, max_size=8), attempt=st.integers(-5, 100))
def test_each_attempt_waits_its_step_and_the_last_repeats(steps: list[int], attempt: int) -> None:
    schedule = parse_schedule(",".join(f"{s}s" for s in steps))
    assert schedule == tuple(steps)
    assert delay_for(schedule, attempt) == steps[min(max(attempt, 1), len(steps)) - 1]
