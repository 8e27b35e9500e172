"""`auto` measures both argon2 libraries on the first checks and keeps the cheaper; a fixed choice never measures."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from services.store.argon2_checkers import LIBRARIES, SAMPLES, Checker, CheckerChoice

MEASURED = sum(SAMPLES.values())


class FakeCpu:
    """A thread CPU clock that each library's check advances by its own cost per unit of work."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def checks(self, work: int, cost: dict[Checker, float], ran: list[Checker]) -> dict[Checker, Callable[[], bool]]:
        def check(library: Checker) -> Callable[[], bool]:
            def run() -> bool:
                ran.append(library)
                self.now += cost[library] * work
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
    assert {library: ran.count(library) for library in LIBRARIES} == SAMPLES
    assert ran[:3] == [Checker.LIBSODIUM, Checker.ARGON2_CFFI, Checker.ARGON2_CFFI]  # interleaved, by share taken
    assert choice.chosen is cheaper
    ran.clear()
    for _ in range(5):
        choice.run(1000, clock.checks(1000, cost, ran))
    assert ran == [cheaper] * 5


def test_samples_compare_per_unit_of_work_and_by_their_best() -> None:
    """A first check that faults its memory in, and a sample of an old hash at 64 MiB, do not mislead it."""
    clock, ran = FakeCpu(), list[Checker]()
    cffi, sodium = Checker.ARGON2_CFFI, Checker.LIBSODIUM
    choice = CheckerChoice(Checker.AUTO, samples={sodium: 2, cffi: 2}, clock=clock)
    # libsodium first (ties go to the first library), then argon2-cffi, each twice.
    choice.run(65536, clock.checks(65536, {sodium: 1.0, cffi: 1.0}, ran))  # big hash, same cost per KiB
    choice.run(1024, clock.checks(1024, {sodium: 1.0, cffi: 3.0}, ran))  # argon2-cffi's first: cold
    choice.run(1024, clock.checks(1024, {sodium: 1.0, cffi: 1.0}, ran))
    choice.run(1024, clock.checks(1024, {sodium: 1.0, cffi: 0.7}, ran))
    assert ran == [sodium, cffi, sodium, cffi]
    assert choice.chosen is cffi


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
    assert {library: ran.count(library) for library in LIBRARIES} == SAMPLES and choice.chosen is not None
