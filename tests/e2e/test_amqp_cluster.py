"""On a three-node RabbitMQ cluster, SIGKILL the node the services are connected to, mid-flow: they fail over to a
live node (POSTROOM_AMQP_URL lists all three) and every message answered 250 is stored exactly once."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from services.store import Store
from shared.netaddr import parse_host_port
from tests.faults.ledger import Ledger, Sent
from tests.faults.traffic import submit_all
from tests.harness import ServiceProcess
from tests.helpers import wait_until
from tests.rabbitmq_cluster import RabbitMQCluster, rabbitmq_cluster  # noqa: F401  (the fixture)
from tests.rabbitmq_node import RabbitMQNode

DOMAIN = "example.test"
USERS = [f"{name}@{DOMAIN}" for name in ("alice", "bob")]
SENDER = "dan@remote.test"
BATCH = 30  # messages per wave, 4 sessions at a time
# Three nodes boot in about a minute on two busy cores, before the test itself.
pytestmark = pytest.mark.timeout(480)


async def kill_mid_flow(ledger: Ledger, port: int, cluster: RabbitMQCluster, connection: str) -> RabbitMQNode:
    """Submit a wave and, once some of it was accepted, SIGKILL the node holding `connection`; then send until
    the ingress accepts again (a client retries a 451). Returns the node killed."""
    wave = [ledger.message(SENDER, USERS) for _ in range(BATCH)]
    sending = asyncio.create_task(submit_all(wave, port))

    async def some_accepted() -> bool:
        return sum(sent.accepted for sent in wave) >= 5 or sending.done()

    await wait_until(some_accepted, timeout=60, what="the first messages of the wave accepted")
    victim: RabbitMQNode = await asyncio.to_thread(cluster.serving, connection)
    await asyncio.to_thread(victim.kill)
    await sending
    more: list[Sent] = []

    async def accepting() -> bool:
        more.extend(await submit_all([ledger.message(SENDER, USERS)], port))
        return more[-1].accepted

    await wait_until(accepting, timeout=90, interval=0.5, what="the ingress accepting on a live node")
    return victim


async def test_killing_the_node_a_service_is_connected_to_loses_and_duplicates_nothing(
    rabbitmq_cluster: RabbitMQCluster,  # noqa: F811
    base_env: dict[str, str],
    start_service: Callable[..., ServiceProcess],
    store: Store,
) -> None:
    await store.accounts.add_domain(DOMAIN)
    for user in USERS:
        await store.accounts.add_user(user, "cluster-password")
    amqp = {"POSTROOM_AMQP_URL": rabbitmq_cluster.url}
    start_service("smtp_ingress", **amqp, POSTROOM_SMTP_PUBLISH_TIMEOUT="5s")
    start_service("delivery", **amqp)
    port = parse_host_port(base_env["POSTROOM_SMTP_LISTEN"]).port
    ledger = Ledger()

    # Both services connect to the first node of the list: killing it cuts the ingress and the delivery at once.
    consumer = "postroom-delivery-consumer"
    assert rabbitmq_cluster.serving(consumer) is rabbitmq_cluster.serving("postroom-smtp-ingress")
    victim = await kill_mid_flow(ledger, port, rabbitmq_cluster, "postroom-smtp-ingress")

    async def settled() -> bool:
        await ledger.scan_store(store, USERS)
        return ledger.settled()

    await wait_until(settled, timeout=120, interval=0.5, what="every accepted message stored")
    report = ledger.assert_exactly_once()
    assert report.accepted >= 5 and report.lost == 0 and report.duplicated == 0, report.line()
    assert rabbitmq_cluster.serving(consumer) is not victim  # the delivery consumes from a live node
