"""tests/harness.py: each of the four services starts in-process, on a loop thread and on the test's loop, becomes
ready against the real brokers, and stops; a refused setting is reported by `run`."""

from __future__ import annotations

import pytest

from tests.harness import SERVICES, Harness


@pytest.mark.parametrize("name", SERVICES)
def test_each_service_on_a_thread_of_its_own(harness: Harness, name: str) -> None:
    service = harness.thread(name)  # returns once ready
    assert service.ready()
    if name != "delivery":  # the only one without a listener
        assert service.port("admin" if name == "store" else name.removesuffix("_ingress")) > 0
    harness.stop()
    assert not service.loop.is_running()


@pytest.mark.parametrize("name", SERVICES)
async def test_each_service_on_the_tests_loop(harness_in_loop: Harness, name: str) -> None:
    app = await harness_in_loop.in_loop(name)
    assert type(app).__module__.startswith(f"services.{name}.")
    await harness_in_loop.stop_in_loop()


def test_an_unknown_service_is_refused(harness: Harness) -> None:
    with pytest.raises(ValueError, match="no service 'smtp'"):
        harness.thread("smtp")
