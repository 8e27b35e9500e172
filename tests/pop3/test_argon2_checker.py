"""Which argon2 library checks POP3 logins, end to end: a real pop3 process, poplib, its /metrics."""

from __future__ import annotations

import asyncio

import pytest

from services.store.argon2_checkers import LIBRARIES, SAMPLES, WARM_UP, Checker
from tests.harness import Harness, ServiceProcess
from tests.helpers import metric_sum
from tests.pop3.test_auth_cache import FAST, user_pass

# Every login is a full argon2 check: the verified-login cache would answer the repeats.
NO_CACHE = {**FAST, "POSTROOM_AUTH_CACHE_TTL": "0"}


def checks(service: ServiceProcess) -> dict[Checker, float]:
    return {
        library: metric_sum(service.metrics_url, f'postroom_password_checks_total{{checker="{library}"}} ')
        for library in LIBRARIES
    }


# Logins enough for `auto` to choose however the pool's threads (at most 4) share them: each thread warms
# argon2-cffi up before its checks are samples.
MEASURING = sum(SAMPLES.values()) + 4 * WARM_UP[Checker.ARGON2_CFFI]


async def test_auto_measures_both_libraries_then_keeps_one(harness: Harness, account: str) -> None:
    service = harness.process("pop3", **NO_CACHE)
    assert checks(service) == dict.fromkeys(LIBRARIES, 0)
    for _ in range(MEASURING):
        assert await asyncio.to_thread(user_pass, service)
    measured = checks(service)
    assert all(measured[library] >= SAMPLES[library] + WARM_UP[library] for library in LIBRARIES)
    for _ in range(3):
        assert await asyncio.to_thread(user_pass, service)
    grown = {library: checks(service)[library] - measured[library] for library in LIBRARIES}
    assert sorted(grown.values()) == [0, 3]  # every later login goes to the library it kept


@pytest.mark.parametrize("fixed", LIBRARIES)
async def test_a_fixed_checker_takes_every_login(harness: Harness, account: str, fixed: Checker) -> None:
    service = harness.process("pop3", POSTROOM_ARGON2_CHECKER=fixed, **NO_CACHE)
    for _ in range(3):
        assert await asyncio.to_thread(user_pass, service)
    assert not await asyncio.to_thread(user_pass, service, "not the password")
    assert checks(service) == {library: 4 if library is fixed else 0 for library in LIBRARIES}
