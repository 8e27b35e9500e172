"""`auto` measures both argon2 libraries on the first checks and keeps the cheaper; a fixed choice never measures."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from services.store.argon2_checkers import LIBRARIES, SAMPLES, WARM_UP, Checker, CheckerChoice

# Checks before the choice when one thread runs them all: the samples, and argon2-cffi's warm-up before them.
ON_ONE_THREAD = {library: SAMPLES[library] + WARM_UP[library] for library in LIBRARIES}
MEASURED = sum(ON_ONE_THREAD.values())


class Held:
    """A check that stays running on its thread until released."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.release = threading.Event()


class FakeCpu:
    """A per-thread CPU clock that each library's check advances by its own cost per unit of work."""

    def __init__(self) -> None:
        self._thread = threading.local()

    def __call__(self) -> float:
        return float(getattr(self._thread, "now", 0.0))

    def checks(
        self, work: int, cost: dict[Checker, float], ran: list[Checker], held: Held | None = None
    ) -> dict[Checker, Callable[[], bool]]:
        """Checks that record which library ran; one `held` says it has started and runs until released."""

        def check(library: Checker) -> Callable[[], bool]:
            def run() -> bool:
                ran.append(library)
                self._thread.now = self() + cost[library] * work
                if held is not None:
                    held.started.set()
                    assert held.release.wait(30)
                return True

            return run

        return {library: check(library) for library in LIBRARIES}


@pytest.mark.parametrize("cheaper", LIBRARIES)
def test_auto_alternates_then_keeps_the_cheaper(cheaper: Checker) -> None:
    clock, ran = FakeCpu(), list[Checker]()
    cost = {library: 1.0 if library is cheaper else 1.4 for library in LIBRARIES}
    choice = CheckerChoice(Checker.AUTO, clock=clock)
    for _ in range(MEASURED):
        assert choice.chosen is None
        assert choice.run(1000, clock.checks(1000, cost, ran))
    assert {library: ran.count(library) for library in LIBRARIES} == ON_ONE_THREAD
    # By share of samples taken: argon2-cffi's warm-up checks come at once, as they take none.
    assert ran[:4] == [Checker.LIBSODIUM, Checker.ARGON2_CFFI, Checker.ARGON2_CFFI, Checker.ARGON2_CFFI]
    assert choice.chosen is cheaper
    ran.clear()
    for _ in range(5):
        choice.run(1000, clock.checks(1000, cost, ran))
    assert ran == [cheaper] * 5


def test_samples_compare_per_unit_of_work_and_by_their_best() -> None:
    """argon2-cffi's warm-up checks, which fault their memory in, and a sample of an old hash at 64 MiB, do not
    mislead it."""
    clock, ran = FakeCpu(), list[Checker]()
    cffi, sodium = Checker.ARGON2_CFFI, Checker.LIBSODIUM
    choice = CheckerChoice(Checker.AUTO, samples={sodium: 2, cffi: 2}, clock=clock, warm_up={cffi: 2})
    choice.run(65536, clock.checks(65536, {sodium: 1.0, cffi: 1.0}, ran))  # big hash, same cost per KiB
    for _ in range(2):  # argon2-cffi's warm-up: cold, and no sample
        choice.run(1024, clock.checks(1024, {sodium: 1.0, cffi: 3.0}, ran))
    choice.run(1024, clock.checks(1024, {sodium: 1.0, cffi: 1.2}, ran))
    choice.run(1024, clock.checks(1024, {sodium: 1.0, cffi: 1.0}, ran))
    assert choice.chosen is None
    choice.run(1024, clock.checks(1024, {sodium: 1.0, cffi: 0.7}, ran))
    assert ran == [sodium, cffi, cffi, cffi, sodium, cffi]
    assert choice.chosen is cffi


def test_the_choice_waits_for_a_sample_still_running() -> None:
    """Every sample is started on one thread or another before the last one ends: the choice counts them all."""
    clock, ran = FakeCpu(), list[Checker]()
    cffi, sodium = Checker.ARGON2_CFFI, Checker.LIBSODIUM
    choice = CheckerChoice(Checker.AUTO, samples={sodium: 1, cffi: 2}, clock=clock, warm_up={})
    choice.run(1024, clock.checks(1024, {sodium: 1.0, cffi: 1.0}, ran))
    held = Held()
    thread = threading.Thread(target=choice.run, args=(1024, clock.checks(1024, {sodium: 1.0, cffi: 0.5}, ran, held)))
    thread.start()
    try:
        assert held.started.wait(30)  # its sample is taken
        choice.run(1024, clock.checks(1024, {sodium: 1.0, cffi: 1.5}, ran))
        assert ran == [sodium, cffi, cffi] and choice.chosen is None
    finally:
        held.release.set()
        thread.join(30)
    assert choice.chosen is cffi  # by the held sample, the cheapest


@pytest.mark.parametrize("fixed", LIBRARIES)
def test_a_fixed_choice_runs_only_that_library(fixed: Checker) -> None:
    clock, ran = FakeCpu(), list[Checker]()
    choice = CheckerChoice(fixed, clock=clock)
    for _ in range(MEASURED + 1):
        choice.run(1024, clock.checks(1024, dict.fromkeys(LIBRARIES, 1.0), ran))
    assert ran == [fixed] * (MEASURED + 1) and choice.chosen is fixed


def test_a_check_of_no_stated_cost_is_no_sample() -> None:
    """A malformed stored string names no memory or passes: it fails fast, and must not look like a cheap library."""
    clock, ran = FakeCpu(), list[Checker]()
    choice = CheckerChoice(Checker.AUTO, clock=clock)
    for _ in range(3):
        choice.run(0, clock.checks(0, dict.fromkeys(LIBRARIES, 1.0), ran))
    assert ran == [LIBRARIES[0]] * 3
    ran.clear()
    for _ in range(MEASURED):
        choice.run(1024, clock.checks(1024, dict.fromkeys(LIBRARIES, 1.0), ran))
    assert {library: ran.count(library) for library in LIBRARIES} == ON_ONE_THREAD and choice.chosen is not None
