"""The overall deadline of one delivery attempt (POSTROOM_DELIVERY_ATTEMPT_TIMEOUT), through the delivery service as
a real process: a tarpitting MX cannot hold a message past the broker's consumer_timeout."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from services.store import Store
from shared.envelope import Envelope
from tests.delivery.conftest import Broker, metric
from tests.delivery.scripted_mx import Script, ScriptedMX
from tests.delivery.smtpsink import Sink
from tests.harness import ServiceProcess
from tests.helpers import wait_until

SENDER = "sender@origin.test"


@pytest.fixture
def scripted() -> Iterator[Callable[..., ScriptedMX]]:
    started: list[ScriptedMX] = []

    def start(address: str, script: Script) -> ScriptedMX:
        mx = ScriptedMX(address, script).start()
        started.append(mx)
        return mx

    yield start
    for mx in started:
        mx.stop()


async def test_a_tarpitting_mx_is_cut_at_the_attempt_deadline_and_deferred_once(
    start_service: Callable[..., ServiceProcess],
    broker: Broker,
    store: Store,
    local_users: Any,
    zone: Any,
    dns_server: Any,
    sinks: Any,
    scripted: Callable[..., ScriptedMX],
    loopback_net: str,
) -> None:
    """The slow MX answers the final dot one byte every half second and never finishes the line: at
    POSTROOM_DELIVERY_ATTEMPT_TIMEOUT its recipient is deferred (4.4.7), once; the other is delivered, once."""
    await local_users(SENDER)
    zone.add("good.test", "A", f"{loopback_net}.1")
    zone.add("slow.test", "A", f"{loopback_net}.2")
    good: Sink = sinks(f"{loopback_net}.1")
    slow = scripted(f"{loopback_net}.2", Script(tarpit=True))
    worker = start_service(
        "delivery",
        POSTROOM_RETRY_SCHEDULE="60s",  # the retry stays in its delay queue while the test looks
        POSTROOM_DNS_NAMESERVERS=dns_server.nameserver,
        POSTROOM_DELIVERY_ATTEMPT_TIMEOUT="3s",
    )
    envelope = await broker.publish(["ok@good.test", "late@slow.test"], sender=SENDER)

    async def deferred() -> bool:
        return "deferred" in [e["event"] for e in await store.trace.events(envelope.queue_id)]

    await wait_until(deferred, timeout=30, what="the tarpitted recipient deferred")

    async def acked() -> bool:
        return await broker.depth(broker.topology.incoming) == 0

    await wait_until(acked, what="the message acked")
    assert [r.rcpt_tos for r in good.received] == [["ok@good.test"]]
    assert slow.handler.tarpitted == 1 and slow.received == []
    [retry] = await broker.get_all(broker.topology.delay_queue(60))
    following = Envelope.from_headers(dict(retry.headers))
    assert following.recipients == ("late@slow.test",) and following.attempt == 1
    assert '"enhanced": "4.4.7"' in dict(following.last_errors)["late@slow.test"]
    assert "POSTROOM_DELIVERY_ATTEMPT_TIMEOUT" in dict(following.last_errors)["late@slow.test"]
    assert metric(worker, "postroom_delivery_attempt_timeouts_total") == 1
    events = [e["event"] for e in await store.trace.events(envelope.queue_id)]
    assert events.count("deferred") == 1 and events.count("relayed") == 1
