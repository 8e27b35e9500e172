"""Every service's /readyz answers within its checks' timeout when Redis hangs (a blackhole, not a refusal)."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from collections.abc import Callable

import pytest

from shared.health import CHECK_TIMEOUT, HealthServer
from shared.netaddr import HostPort
from tests.faults.proxy import redis_proxy
from tests.helpers import ServiceProcess, http_status, wait_until_sync

# Far above CHECK_TIMEOUT (the checks run at once), far below "hung": a /readyz slower than this fails the test.
ANSWER_WITHIN = CHECK_TIMEOUT * 5


def readiness(service: ServiceProcess) -> tuple[int, dict[str, bool]]:
    try:
        with urllib.request.urlopen(f"{service.metrics_url}/readyz", timeout=ANSWER_WITHIN) as response:
            return int(response.status), json.loads(response.read())["checks"]
    except urllib.error.HTTPError as error:
        return int(error.code), json.loads(error.read())["checks"]


@pytest.mark.parametrize("name", ["smtp_ingress", "pop3", "delivery", "store"])
def test_a_hung_redis_makes_readyz_say_not_ready_without_hanging(
    start_service: Callable[..., ServiceProcess], name: str
) -> None:
    with redis_proxy() as proxy:
        service = start_service(name, POSTROOM_REDIS_URL=proxy.redis_url)
        proxy.blackhole()
        status, checks = readiness(service)
        assert status == 503 and checks["redis"] is False, checks
        assert all(ok for check, ok in checks.items() if check != "redis"), checks
        proxy.pass_through()
        wait_until_sync(lambda: http_status(f"{service.metrics_url}/readyz") == 200, 30, f"{name} ready again")


async def test_a_check_that_never_answers_is_not_ready_and_the_others_still_count() -> None:
    health = HealthServer(HostPort("127.0.0.1", 0), check_timeout=0.05)
    never = asyncio.Event()

    async def hung() -> bool:
        await never.wait()
        return True

    async def fine() -> bool:
        return True

    async def broken() -> bool:
        raise ConnectionError("refused")

    health.add_check("hung", hung)
    health.add_check("fine", fine)
    health.add_check("broken", broken)
    assert await health.readiness() == {"hung": False, "fine": True, "broken": False}
