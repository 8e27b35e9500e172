"""Queue operations against the real RabbitMQ (no management plugin): status, dead letters listed/requeued/purged."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor

import aio_pika
import pytest
import requests
from aio_pika.abc import AbstractChannel
from click.testing import CliRunner

from services.store.cli import cli
from services.store.queue_flush import flush, ids_in
from services.store.queue_ops import _BATCH, QueueError, QueueOps
from shared.envelope import REQUEUED, Envelope
from shared.queue_id import new_queue_id
from shared.topology import Topology
from tests.helpers import AMQP_URL, wait_until
from tests.store.conftest import TEST_DELAYS, AdminAPI


@pytest.fixture
async def channel(namespace: str) -> AsyncIterator[AbstractChannel]:
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        chan = await connection.channel(publisher_confirms=True)
        await Topology(namespace).declare(chan, TEST_DELAYS)
        yield chan


async def kill_letters(channel: AbstractChannel, namespace: str, count: int) -> list[str]:
    """Put `count` messages straight into the dead queue, as the broker would after the delivery limit."""
    ids = []
    for n in range(count):
        queue_id = new_queue_id()
        envelope = Envelope(queue_id, f"sender{n}@remote.test", (f"rcpt{n}@example.test",), attempt=n)
        headers = {**envelope.to_headers(), "x-first-death-reason": "delivery_limit"}
        message = aio_pika.Message(
            b"Subject: poison %d\r\n\r\nbody\r\n" % n,
            headers=headers,
            message_id=queue_id,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        )
        await channel.default_exchange.publish(message, Topology(namespace).dead)
        ids.append(queue_id)
    return ids


async def depth(channel: AbstractChannel, name: str) -> int:
    queue = await channel.declare_queue(name, passive=True)
    return int(queue.declaration_result.message_count or 0)


@pytest.fixture
async def ops(namespace: str) -> AsyncIterator[QueueOps]:
    handle = QueueOps(AMQP_URL, namespace, TEST_DELAYS)
    yield handle
    await handle.close()


async def test_status_reports_every_queue(channel: AbstractChannel, namespace: str, ops: QueueOps) -> None:
    await kill_letters(channel, namespace, 2)
    consumer_queue = await channel.declare_queue(Topology(namespace).incoming, passive=True)

    async def ignore(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        return None

    tag = await consumer_queue.consume(ignore)
    status = {q.name: q for q in await ops.status()}
    t = Topology(namespace)
    assert list(status) == [t.incoming, t.delay_queue(60), t.delay_queue(300), t.dead]
    assert status[t.dead].messages == 2 and status[t.dead].kind == "dead"
    assert status[t.incoming].consumers == 1
    assert status[t.delay_queue(300)].delay_seconds == 300 and status[t.delay_queue(300)].exists
    await consumer_queue.cancel(tag)


async def test_status_of_undeclared_topology(namespace: str, ops: QueueOps) -> None:
    status = await ops.status()
    assert status and not any(q.exists for q in status)


async def test_dead_letters_listed_in_order_and_kept(channel: AbstractChannel, namespace: str, ops: QueueOps) -> None:
    ids = await kill_letters(channel, namespace, 5)
    for _ in range(3):  # listing again and again neither loses, reorders nor duplicates
        letters = await ops.dead_letters()
        assert [d.queue_id for d in letters] == ids
    first = letters[0]
    assert first.mail_from == "sender0@remote.test" and first.recipients == ["rcpt0@example.test"]
    assert first.reason == "delivery_limit" and first.size > 0 and first.first_seen
    assert [d.queue_id for d in await ops.dead_letters(limit=2)] == ids[:2]
    assert await depth(channel, Topology(namespace).dead) == 5
    # What a listing showed goes to the back of the queue: the next listing starts with the ones after it.
    assert [d.queue_id for d in await ops.dead_letters()] == ids[2:] + ids[:2]


async def test_requeue_chosen_then_all(channel: AbstractChannel, namespace: str, ops: QueueOps) -> None:
    ids = await kill_letters(channel, namespace, 4)
    t = Topology(namespace)
    assert await ops.requeue([ids[1], ids[3], new_queue_id()]) == 2
    assert [d.queue_id for d in await ops.dead_letters()] == [ids[0], ids[2]]
    assert await depth(channel, t.incoming) == 2
    incoming = await channel.declare_queue(t.incoming, passive=True)
    message = await incoming.get(no_ack=False)
    assert message is not None and message.message_id == ids[1] and message.body.startswith(b"Subject: poison 1")
    assert Envelope.from_headers(dict(message.headers)).queue_id == ids[1]
    assert "x-first-death-reason" not in message.headers
    assert message.headers[REQUEUED] is True  # the delivery reads its progress record: it may be partly done
    await message.nack(requeue=True)
    assert await ops.requeue(None) == 2
    assert await depth(channel, t.dead) == 0 and await depth(channel, t.incoming) == 4


async def test_requeue_over_several_batches_leaves_each_letter_once(
    channel: AbstractChannel, namespace: str, ops: QueueOps
) -> None:
    """More dead letters than one batch of the cycle (queue_ops._BATCH), requeued a third at a time: each requeue
    moves every chosen letter to `incoming` once, and at the end no copy is left in `dead`. RabbitMQ settles each
    basic.get on a quorum queue on its own and holds a channel's settles past 32 until the queue applied earlier
    ones: a cycle that closed its channel right after acking often left the tail of its last batch in `dead` a
    second time (a letter already requeued, or one to be requeued twice by the next third)."""
    count = 2 * _BATCH + 50
    ids = await kill_letters(channel, namespace, count)
    t = Topology(namespace)
    for third in range(3):
        chosen = ids[third::3]
        assert await ops.requeue(chosen) == len(chosen)
        assert sorted(await _drain(channel, t.incoming, 2 * count)) == sorted(chosen)
    assert await _settled_ids(channel, t.dead, 2 * count) == []


async def test_flush_over_several_batches_leaves_each_message_once(
    channel: AbstractChannel, namespace: str, ops: QueueOps
) -> None:
    """The flush cycles a delay queue the same way (queue_ops.cycle), here a third at a time: each flush moves every
    chosen message to `incoming` once, and at the end no copy is left in the delay queue."""
    count = 2 * _BATCH + 50
    t = Topology(namespace)
    ids = [new_queue_id() for _ in range(count)]
    for queue_id in ids:
        message = aio_pika.Message(b"deferred", message_id=queue_id, delivery_mode=aio_pika.DeliveryMode.PERSISTENT)
        await channel.default_exchange.publish(message, t.delay_queue(300))

    async def no_due_times(queue_ids: list[str]) -> dict[str, float]:
        return {}  # each message put back waits its queue's whole delay: longer than this test

    for third in range(3):
        chosen = ids[third::3]
        assert sorted(await flush(ops, ids_in(chosen), no_due_times)) == sorted(chosen)
        assert sorted(await _drain(channel, t.incoming, 2 * count)) == sorted(chosen)
    assert await _settled_ids(channel, t.delay_queue(300), 2 * count) == []


async def _settled_ids(channel: AbstractChannel, name: str, most: int) -> list[str]:
    """The queue ids left in queue `name` once no message of it is held by a client (every basic.get settled or
    handed back: RabbitMQ counts each as a consumer of a quorum queue), taken off it."""
    await wait_until(lambda: _no_consumer(channel, name), what=f"no message of {name} held")
    return await _drain(channel, name, most)


async def _no_consumer(channel: AbstractChannel, name: str) -> bool:
    queue = await channel.declare_queue(name, passive=True)
    return not queue.declaration_result.consumer_count


async def _drain(channel: AbstractChannel, name: str, most: int) -> list[str]:
    """The queue ids of the messages in queue `name`, taken off it (at most `most`)."""
    queue = await channel.declare_queue(name, passive=True)
    found = []
    for _ in range(most):
        message = await queue.get(no_ack=True, fail=False)
        if message is None:
            break
        found.append(str(message.message_id))
    return found


async def test_purge(channel: AbstractChannel, namespace: str, ops: QueueOps) -> None:
    await kill_letters(channel, namespace, 3)
    assert await ops.purge() == 3
    assert await ops.dead_letters() == []
    assert await ops.purge() == 0


async def test_cli_queue_commands(channel: AbstractChannel, namespace: str) -> None:
    ids = await kill_letters(channel, namespace, 2)
    runner = CliRunner()
    env = {"POSTROOM_NAMESPACE": namespace, "POSTROOM_RETRY_SCHEDULE": "1m,5m", "POSTROOM_AMQP_URL": AMQP_URL}

    def postroom(*args: str, input: str | None = None):  # type: ignore[no-untyped-def]
        with ThreadPoolExecutor(1) as pool:
            return pool.submit(runner.invoke, cli, list(args), input=input, env=env).result()

    table = postroom("queue", "status")
    assert table.exit_code == 0, table.output
    assert f"{namespace}.delay.300s" in table.stdout and "CONSUMERS" in table.stdout
    status = json.loads(postroom("queue", "status", "--json").stdout)
    assert [q["messages"] for q in status if q["kind"] == "dead"] == [2]
    listed = postroom("queue", "dead", "list")
    assert ids[0] in listed.stdout and "sender0@remote.test" in listed.stdout
    assert [d["queue_id"] for d in json.loads(postroom("queue", "dead", "list", "--json").stdout)] == ids
    assert postroom("queue", "dead", "requeue").exit_code == 1
    assert postroom("queue", "dead", "requeue", "bogus").exit_code == 1
    moved = postroom("queue", "dead", "requeue", ids[0], "--json")
    assert moved.exit_code == 0 and json.loads(moved.stdout) == {"requeued": 1}
    missing = postroom("queue", "dead", "requeue", ids[0])
    assert missing.exit_code == 1 and "not in the dead-letter queue" in missing.stderr
    assert json.loads(postroom("queue", "dead", "purge", "--json").stdout) == {"purged": 1}  # no terminal: no prompt
    assert "no dead letters" in postroom("queue", "dead", "list").stdout


async def test_api_queue(channel: AbstractChannel, namespace: str, admin: AdminAPI) -> None:
    ids = await kill_letters(channel, namespace, 3)

    def get(path: str, method: str = "GET", **kwargs):  # type: ignore[no-untyped-def]
        with ThreadPoolExecutor(1) as pool:
            call = pool.submit(
                requests.request, method, admin.url + path, headers=admin.headers(), timeout=10, **kwargs
            )
            return call.result()

    body = get("/api/v1/queue").json()
    assert [q["kind"] for q in body["queues"]] == ["incoming", "delay", "delay", "dead"]
    assert body["dead_letters"] == []  # depths only, unless dead letters are asked for
    assert [d["queue_id"] for d in get("/api/v1/queue?limit=100").json()["dead_letters"]] == ids
    assert get("/api/v1/queue?limit=0").json()["dead_letters"] == []
    assert get("/api/v1/queue/dead/requeue", "POST", json={"queue_ids": [ids[2]]}).json() == {"requeued": 1}
    assert get("/api/v1/queue/dead/requeue", "POST", json={"queue_ids": ["x"]}).status_code == 400
    assert get("/api/v1/queue/dead/requeue", "POST", json={}).status_code == 400
    assert get("/api/v1/queue/dead", "DELETE").json() == {"purged": 2}


async def test_failed_requeue_loses_nothing(channel: AbstractChannel, namespace: str, ops: QueueOps) -> None:
    """With `incoming` gone the mandatory publish comes back: the operation fails and every dead letter stays."""
    ids = await kill_letters(channel, namespace, 3)
    await channel.queue_delete(Topology(namespace).incoming)
    with pytest.raises(QueueError, match="stay dead"):
        await ops.requeue(None)
    letters = await ops.dead_letters()
    assert [d.queue_id for d in letters] == ids


def test_cli_rabbitmq_unreachable_is_one_line(namespace: str) -> None:
    from tests.helpers import free_port

    env = {"POSTROOM_NAMESPACE": namespace, "POSTROOM_AMQP_URL": f"amqp://guest:guest@127.0.0.1:{free_port()}/"}
    for args in (["queue", "status"], ["queue", "dead", "list"], ["queue", "dead", "requeue", "--all"]):
        result = CliRunner().invoke(cli, args, env=env)
        assert result.exit_code == 75, result.output  # EX_TEMPFAIL: try again later
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("postroom: error: cannot reach RabbitMQ"), result.stderr
