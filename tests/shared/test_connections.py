"""A refused AMQP connect closes the connection object it made (aio_pika leaves that to the garbage collector)."""

from __future__ import annotations

import gc

import aio_pika
import pytest

from shared.connections import connect_amqp, connect_amqp_once
from tests.helpers import free_port


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
