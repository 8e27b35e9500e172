"""Looking at the queue does not hurt it: status touches no dead letter, a listing touches only what it lists."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import aio_pika
import pytest
import requests
from aio_pika.abc import AbstractChannel
from click.testing import CliRunner, Result

from services.store.cli import cli
from shared.envelope import Envelope
from shared.queue_id import new_queue_id
from shared.topology import Topology
from tests.helpers import AMQP_URL
from tests.store.conftest import TEST_DELAYS, AdminAPI

DEAD_LETTERS = 40


@dataclass(frozen=True)
class Seen:
    """A dead letter as a final drain finds it."""

    queue_id: str
    original: bool  # still the message we published: a republished copy does not carry our correlation id
    redelivered: bool  # handed to a consumer and given back
    delivery_count: int


@pytest.fixture
async def channel(namespace: str) -> AsyncIterator[AbstractChannel]:
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        chan = await connection.channel(publisher_confirms=True)
        await Topology(namespace).declare(chan, TEST_DELAYS)
        yield chan


async def kill_letters(channel: AbstractChannel, namespace: str, count: int) -> list[str]:
    ids = []
    for n in range(count):
        queue_id = new_queue_id()
        headers = {**Envelope(queue_id, "s@remote.test", ("r@example.test",)).to_headers(), "x-first-death-reason": "x"}
        message = aio_pika.Message(
            b"Subject: poison %d\r\n\r\n%s\r\n" % (n, b"x" * 1000),
            headers=headers,
            message_id=queue_id,
            correlation_id=f"original {queue_id}",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        )
        await channel.default_exchange.publish(message, Topology(namespace).dead)
        ids.append(queue_id)
    return ids


async def drain(channel: AbstractChannel, namespace: str) -> list[Seen]:
    dead = await channel.declare_queue(Topology(namespace).dead, passive=True)
    seen: list[Seen] = []
    for _ in range(10 * DEAD_LETTERS):  # bounded: a copy loop could otherwise keep us here
        message = await dead.get(no_ack=True, fail=False)
        if message is None:
            return seen
        queue_id = str(message.message_id)
        count = int(str((message.headers or {}).get("x-delivery-count", 0)))
        seen.append(Seen(queue_id, message.correlation_id == f"original {queue_id}", bool(message.redelivered), count))
    raise AssertionError("the dead queue did not drain")


def untouched(ids: list[str]) -> list[Seen]:
    return [Seen(queue_id, True, False, 0) for queue_id in ids]


def postroom(namespace: str, *args: str) -> Result:
    env = {"POSTROOM_NAMESPACE": namespace, "POSTROOM_RETRY_SCHEDULE": "1m,5m", "POSTROOM_AMQP_URL": AMQP_URL}
    with ThreadPoolExecutor(1) as pool:
        result = pool.submit(CliRunner().invoke, cli, list(args), env=env).result()
    assert result.exit_code == 0, result.output
    return result


def api(admin: AdminAPI, path: str) -> Any:
    with ThreadPoolExecutor(1) as pool:
        response = pool.submit(requests.get, admin.url + path, headers=admin.headers(), timeout=30).result()
    assert response.status_code == 200, response.text
    return response.json()


async def test_status_touches_no_dead_letter(channel: AbstractChannel, namespace: str, admin: AdminAPI) -> None:
    """CLI and API status give the dead queue's depth from a passive declare: same messages, same order, unmarked."""
    ids = await kill_letters(channel, namespace, DEAD_LETTERS)
    status = json.loads(postroom(namespace, "queue", "status", "--json").stdout)
    assert [q["messages"] for q in status if q["kind"] == "dead"] == [DEAD_LETTERS]
    body = api(admin, "/api/v1/queue")
    assert [q["messages"] for q in body["queues"] if q["kind"] == "dead"] == [DEAD_LETTERS]
    assert body["dead_letters"] == []
    assert await drain(channel, namespace) == untouched(ids)


@pytest.mark.parametrize("how", ["cli", "api"])
async def test_a_listing_touches_only_what_it_lists(
    channel: AbstractChannel, namespace: str, admin_factory: Callable[..., AdminAPI], how: str
) -> None:
    """`dead list --limit 5` (or `?limit=5`) takes five dead letters, copies none, and hands them back."""
    ids = await kill_letters(channel, namespace, DEAD_LETTERS)
    if how == "cli":
        listed = [
            d["queue_id"]
            for d in json.loads(postroom(namespace, "queue", "dead", "list", "--limit", "5", "--json").stdout)
        ]
    else:
        listed = [d["queue_id"] for d in api(admin_factory(), "/api/v1/queue?limit=5")["dead_letters"]]
    assert listed == ids[:5]
    seen = await drain(channel, namespace)
    # The 35 not listed are untouched and in their order; the five listed are the same messages, back at the tail.
    assert seen[: DEAD_LETTERS - 5] == untouched(ids[5:])
    assert seen[DEAD_LETTERS - 5 :] == [Seen(queue_id, True, True, 1) for queue_id in ids[:5]]
