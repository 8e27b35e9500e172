"""The whole path with Redis taken away from the delivery while it stores: every message answered 250 is stored
exactly once (or bounced once, if the outage outlives the queue lifetime).

The delivery's connections to Redis go through a FaultProxy; the store runs one Lua script (EVALSHA) per message,
and the proxy acts on the first one: before Redis sees it, or after Redis ran it and before its reply is back.
"""

from __future__ import annotations

import pytest

from tests.faults.ledger import Ledger
from tests.faults.proxy import REDIS_EVALSHA, Action, Direction
from tests.faults.stack import USERS, FaultStack, metric
from tests.helpers import wait_until_sync

LOCAL = [USERS[1], USERS[2], USERS[3]]


@pytest.mark.parametrize(
    ("action", "forward"),
    [
        pytest.param(Action.CUT, False, id="cut-before-the-store"),
        pytest.param(Action.RESET, False, id="reset-before-the-store"),
        pytest.param(Action.CUT, True, id="cut-after-the-store-ran"),
        pytest.param(Action.BLACKHOLE, True, id="reply-of-the-store-lost"),
    ],
)
def test_redis_lost_during_the_store(stack: FaultStack, ledger: Ledger, action: Action, forward: bool) -> None:
    proxy = stack.delivery_redis
    assert proxy is not None
    proxy.on(REDIS_EVALSHA, Direction.UP, action, forward=forward)
    sent = stack.send(ledger, LOCAL)
    wait_until_sync(proxy.triggered, 30, what="the fault hit")
    sent += stack.send(ledger, LOCAL, count=3)
    stack.settle(ledger, sent)
    report = ledger.assert_exactly_once([s.token for s in sent])
    assert report.delivered == 4 * len(LOCAL) and stack.new_dead_letters() == 0


def test_redis_blackholed_for_a_while(stack: FaultStack, ledger: Ledger) -> None:
    proxy = stack.delivery_redis
    assert proxy is not None
    delivery = stack.services["delivery"]
    deferred = metric(delivery, "postroom_delivery_messages_total", 'result="deferred"')
    proxy.blackhole()
    sent = stack.send(ledger, LOCAL, count=2)
    # Every connection hangs: the store times out (POSTROOM_DELIVERY_REDIS_TIMEOUT, 3 s), the recipients are deferred.
    wait_until_sync(
        lambda: metric(delivery, "postroom_delivery_messages_total", 'result="deferred"') > deferred,
        30,
        what="a deferral",
    )
    proxy.pass_through()
    stack.settle(ledger, sent)
    report = ledger.assert_exactly_once([s.token for s in sent])
    assert report.delivered == 2 * len(LOCAL) and stack.new_dead_letters() == 0
