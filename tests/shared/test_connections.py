"""AMQP connection helpers: a refused connect closes the connection object it made (aio_pika leaves that to the
garbage collector); the blocked state (a broker alarm) is read from aiormq."""

from __future__ import annotations

import asyncio
import gc

import aio_pika
import pytest

from shared.connections import connect_amqp, connect_amqp_once, publishing_blocked
from tests.helpers import AMQP_URL, free_port


def _open_connections_to(port: int) -> list[aio_pika.Connection]:
    gc.collect()
    return [
        o for o in gc.get_objects() if isinstance(o, aio_pika.Connection) and o.url.port == port and not o.is_closed
    ]


async def test_a_refused_connect_leaves_no_open_connection_behind() -> None:
    port = free_port()  # nothing listens there: refused at once
    for connect in (connect_amqp_once, connect_amqp):
        with pytest.raises(Exception):  # noqa: B017 (aiormq's or the OS's refusal, whichever it wraps)
            await connect(f"amqp://guest:guest@127.0.0.1:{port}/", "refused-test")
    assert _open_connections_to(port) == []


async def test_publishing_blocked_reads_the_state_aiormq_keeps() -> None:
    """The seam `publishing_blocked` rides (aiormq's private unblocked event, which its public `ready()` awaits):
    this fails when an aiormq upgrade moves it. The blocked state itself: tests/*/test_broker_alarm.py."""
    connection = await connect_amqp_once(AMQP_URL, "blocked-seam-test")
    try:
        assert connection.transport is not None
        unblocked = getattr(connection.transport.connection, "_Connection__connection_unblocked", None)
        assert isinstance(unblocked, asyncio.Event) and unblocked.is_set()
        assert not publishing_blocked(connection)
        unblocked.clear()  # what aiormq does on connection.blocked
        assert publishing_blocked(connection)
        unblocked.set()
    finally:
        await connection.close()
