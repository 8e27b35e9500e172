"""A private three-node RabbitMQ cluster on this machine, for tests that kill the node a service is connected to.

Three RabbitMQNode processes (their own names, ports and directories; one Erlang cookie, the rabbitmq user's),
joined into one cluster. Queues declared once all three are members replicate to every node."""

from __future__ import annotations

import concurrent.futures
import json
import time
from collections.abc import Iterator

import pytest

from tests.helpers import wait_until_sync
from tests.rabbitmq_node import START_TIMEOUT, RabbitMQNode, unavailable_reason


class RabbitMQCluster:
    """`nodes[0]` is the seed the others join; `url` lists every node, as POSTROOM_AMQP_URL takes them."""

    def __init__(self, size: int = 3) -> None:
        self.nodes = [RabbitMQNode() for _ in range(size)]

    @property
    def url(self) -> str:
        return ",".join(node.url for node in self.nodes)

    def start(self) -> RabbitMQCluster:
        # The nodes boot in parallel (each takes seconds of CPU); then each joins the first.
        with concurrent.futures.ThreadPoolExecutor(len(self.nodes)) as pool:
            list(pool.map(RabbitMQNode.start, self.nodes))
        seed = self.nodes[0]
        for node in self.nodes[1:]:
            node.ctl("stop_app")
            node.ctl("join_cluster", seed.name, timeout=START_TIMEOUT)
            node.ctl("start_app", timeout=START_TIMEOUT)
        wait_until_sync(self.formed, START_TIMEOUT, what="every node running in one cluster")
        return self

    def formed(self) -> bool:
        status = json.loads(self.nodes[0].ctl("cluster_status", "--formatter", "json"))
        return sorted(status.get("running_nodes", [])) == sorted(node.name for node in self.nodes)

    def serving(self, connection_name: str) -> RabbitMQNode:
        """The running node that holds the client connection named `connection_name`."""
        for node in self.nodes:
            running = node.proc is not None and node.proc.poll() is None
            if running and any(name == connection_name for name, _ in node.connections()):
                return node
        raise AssertionError(f"no node holds a connection named {connection_name}")

    def stop(self) -> None:
        for node in reversed(self.nodes):
            node.stop()


@pytest.fixture(scope="module")
def rabbitmq_cluster() -> Iterator[RabbitMQCluster]:
    """A cluster for the tests of one module (tens of seconds to start), stopped at the end."""
    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    cluster = RabbitMQCluster()
    started = time.monotonic()
    try:
        cluster.start()
    except BaseException:
        cluster.stop()
        raise
    print(f"RabbitMQ cluster up in {time.monotonic() - started:.0f}s")
    yield cluster
    cluster.stop()
