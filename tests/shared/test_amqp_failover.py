"""POSTROOM_AMQP_URL as a list of a cluster's nodes: connect to the first live one, fail over to the next and back.

Two fault proxies in front of the test broker stand for two nodes: cutting one is that node dying."""

from __future__ import annotations

import aio_pika

from shared.connections import FailoverRobustConnection, amqp_nodes, connect_amqp, connect_amqp_once
from tests.faults.proxy import FaultProxy, broker_proxy
from tests.helpers import AMQP_URL, free_port, wait_until


def test_the_url_is_one_node_or_a_comma_separated_list() -> None:
    nodes = amqp_nodes(" amqp://u:p%2Cq@a:5672/ ,amqp://u:p%2Cq@b:5673/vh,")
    assert [(node.host, node.port, node.password, node.path) for node in nodes] == [
        ("a", 5672, "p,q", "/"),
        ("b", 5673, "p,q", "/vh"),
    ]


async def test_both_kinds_of_connection_take_the_first_node_that_answers() -> None:
    dead = f"amqp://guest:guest@127.0.0.1:{free_port()}/"
    for connect in (connect_amqp_once, connect_amqp):
        connection = await connect(f"{dead},{AMQP_URL}", "failover-test")
        try:
            channel = await connection.channel()
            await channel.close()
        finally:
            await connection.close()


async def roundtrip(channel: aio_pika.abc.AbstractChannel, body: bytes) -> bytes:
    """Publish to a server-named queue and read the message back: the connection carries traffic."""
    queue = await channel.declare_queue(exclusive=True, auto_delete=True)
    await channel.default_exchange.publish(aio_pika.Message(body), routing_key=queue.name)
    message = await queue.get(timeout=10)
    await message.ack()
    await queue.delete()
    return message.body


async def serving_through(connection: FailoverRobustConnection, proxy: FaultProxy) -> None:
    async def connected() -> bool:
        return connection.connected.is_set() and proxy.open_connections == 1

    await wait_until(connected, timeout=60, what=f"the connection through port {proxy.port}")


async def test_a_robust_connection_fails_over_to_the_next_node_and_back() -> None:
    with broker_proxy() as first, broker_proxy() as second:
        connection = await connect_amqp(f"{first.amqp_url},{second.amqp_url}", "failover-test")
        assert isinstance(connection, FailoverRobustConnection)
        try:
            channel = await connection.channel()
            seen = {"first": (connection.node.port, await roundtrip(channel, b"one"))}

            first.cut()  # the node we are connected to dies, and stays down
            await serving_through(connection, second)
            seen["failed over"] = (connection.node.port, await roundtrip(channel, b"two"))

            first.enable()  # back again; then the second one dies
            second.cut()
            await serving_through(connection, first)
            seen["and back"] = (connection.node.port, await roundtrip(channel, b"three"))
        finally:
            await connection.close()
    assert seen == {
        "first": (first.port, b"one"),
        "failed over": (second.port, b"two"),
        "and back": (first.port, b"three"),
    }
