"""The whole path with the broker taken away at the worst moments: every message answered 250 is delivered or
bounced exactly once.

The ingress's and the delivery's connections to RabbitMQ each go through a FaultProxy that cuts, resets or
blackholes the connection at the first Basic.Publish (the ingress publishing a message), Basic.Deliver (the
broker handing one to the delivery) or Basic.Ack (the delivery acking one, the broker confirming one).
"""

from __future__ import annotations

import pytest

from tests.faults.ledger import Ledger, Sent
from tests.faults.proxy import AMQP_BASIC_ACK, AMQP_BASIC_DELIVER, AMQP_BASIC_PUBLISH, Action, Direction
from tests.faults.stack import SINK_DOMAIN, USERS, FaultStack
from tests.helpers import wait_until_sync

LOCAL = [USERS[1], USERS[2]]
REMOTE = [f"one@{SINK_DOMAIN}"]


def send_until_accepted(stack: FaultStack, ledger: Ledger, recipients: list[str], first: Sent) -> list[Sent]:
    """After a fault: more messages, one at a time, until the ingress answers 250 again (it reconnected)."""
    sent = [first]

    def accepted() -> bool:
        sent.extend(stack.send(ledger, recipients))
        return sent[-1].accepted

    wait_until_sync(accepted, 60, what="the ingress accepting again")
    sent.extend(stack.send(ledger, recipients, count=3))
    return sent


def check(stack: FaultStack, ledger: Ledger, sent: list[Sent]) -> None:
    stack.settle(ledger, sent)
    report = ledger.assert_exactly_once([s.token for s in sent])
    assert report.accepted >= 4 and stack.new_dead_letters() == 0


@pytest.mark.parametrize("action", [Action.CUT, Action.RESET, Action.BLACKHOLE])
def test_broker_lost_while_the_ingress_publishes(stack: FaultStack, ledger: Ledger, action: Action) -> None:
    proxy = stack.ingress_amqp
    assert proxy is not None
    proxy.on(AMQP_BASIC_PUBLISH, Direction.UP, action)
    [first] = stack.send(ledger, [*LOCAL, *REMOTE])
    assert proxy.triggered()
    assert not first.accepted and first.code == 451, first.reply  # the publish never reached the broker
    check(stack, ledger, send_until_accepted(stack, ledger, [*LOCAL, *REMOTE], first))
    assert ledger.report().unconfirmed == 0


def test_confirm_lost_after_the_broker_took_the_message(stack: FaultStack, ledger: Ledger) -> None:
    proxy = stack.ingress_amqp
    assert proxy is not None
    proxy.on(AMQP_BASIC_ACK, Direction.DOWN, Action.CUT)  # the broker's confirm of our publish
    [first] = stack.send(ledger, LOCAL)
    assert proxy.triggered() and first.code == 451, first.reply
    check(stack, ledger, send_until_accepted(stack, ledger, LOCAL, first))
    # The broker had it: it is delivered, once, though the client was told 451 (and may send it again: RFC 5321
    # §6.1 allows that duplicate; nothing here makes two of one queued message).
    assert ledger.report().unconfirmed == len(LOCAL)


def delivery_fault(stack: FaultStack, ledger: Ledger, pattern: bytes, direction: Direction, action: Action) -> None:
    proxy = stack.delivery_amqp
    assert proxy is not None
    made = proxy.connections_made
    proxy.on(pattern, direction, action)
    sent = stack.send(ledger, [*LOCAL, *REMOTE])
    wait_until_sync(proxy.triggered, 30, what="the fault hit")
    # The delivery notices (a closed socket, or missed heartbeats) and connects again; the broker hands the
    # message out again once the old connection is gone.
    wait_until_sync(lambda: proxy.connections_made > made, 60, what="the delivery reconnected")
    sent += stack.send(ledger, [*LOCAL, *REMOTE], count=3)
    check(stack, ledger, sent)


@pytest.mark.parametrize("action", [Action.CUT, Action.RESET, Action.BLACKHOLE])
def test_broker_lost_while_handing_a_message_to_the_delivery(stack: FaultStack, ledger: Ledger, action: Action) -> None:
    delivery_fault(stack, ledger, AMQP_BASIC_DELIVER, Direction.DOWN, action)


@pytest.mark.parametrize("action", [Action.CUT, Action.RESET, Action.BLACKHOLE])
def test_broker_lost_with_the_ack_of_a_local_delivery(stack: FaultStack, ledger: Ledger, action: Action) -> None:
    # Stored, then the ack never arrives: redelivered, and the store's dedup key keeps it one copy.
    proxy = stack.delivery_amqp
    assert proxy is not None
    made = proxy.connections_made
    proxy.on(AMQP_BASIC_ACK, Direction.UP, action)
    sent = stack.send(ledger, LOCAL)
    wait_until_sync(lambda: proxy.connections_made > made, 60, what="the delivery reconnected")
    sent += stack.send(ledger, LOCAL, count=3)
    check(stack, ledger, sent)


@pytest.mark.parametrize("action", [Action.CUT, Action.RESET, Action.BLACKHOLE])
def test_broker_lost_with_the_ack_of_a_relayed_message(stack: FaultStack, ledger: Ledger, action: Action) -> None:
    # Relayed with a 250 from the MX, then the ack never arrives: the redelivery must not relay it again.
    delivery_fault(stack, ledger, AMQP_BASIC_ACK, Direction.UP, action)
