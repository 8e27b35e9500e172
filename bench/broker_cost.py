"""RabbitMQ's CPU per message on Postroom's work queue: publishing alone, draining a backlog, and both at once.

A private RabbitMQ node (root) with Postroom's topology (quorum `incoming` queue, delivery limit, at-least-once
dead-lettering); 20 publishers with confirms, paced to `--rate` in all (0: as fast as they go), 1 KiB bodies with the
envelope headers the ingress sends; one consumer with Postroom's prefetch acking each message. What it shows: the
broker's share of the end-to-end cost (performance.md) is the live pattern, a message handed to a waiting consumer
as soon as it is written, not the publish or the backlog alone.

    .venv/bin/python -m bench.broker_cost --messages 8000 --rate 1300
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid

import aio_pika
from aio_pika.abc import AbstractIncomingMessage

from bench.brokers import private_rabbitmq
from bench.stack import tree_cpu_seconds
from shared.envelope import Envelope
from shared.queue_id import new_queue_id
from shared.topology import Topology

PUBLISHERS = 20
PREFETCH = 64


async def publish(url: str, topology: Topology, count: int, rate: float) -> None:
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(topology.exchange)
        body = b"x" * 1024
        each = count // PUBLISHERS

        async def publisher() -> None:
            started = time.monotonic()
            for sent in range(1, each + 1):
                envelope = Envelope(new_queue_id(), "load@remote.test", ("user@example.test",))
                message = aio_pika.Message(
                    body, headers=envelope.to_headers(), delivery_mode=aio_pika.DeliveryMode.PERSISTENT
                )
                await exchange.publish(message, routing_key=topology.incoming, mandatory=True)
                if rate:
                    ahead = started + sent * PUBLISHERS / rate - time.monotonic()
                    if ahead > 0:
                        await asyncio.sleep(ahead)

        await asyncio.gather(*(publisher() for _ in range(PUBLISHERS)))


async def consume(url: str, topology: Topology, count: int) -> None:
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=PREFETCH)
        queue = await channel.get_queue(topology.incoming)
        done = asyncio.Event()
        received = 0

        async def on_message(message: AbstractIncomingMessage) -> None:
            nonlocal received
            await message.ack()
            received += 1
            if received == count:
                done.set()

        await queue.consume(on_message)
        await asyncio.wait_for(done.wait(), timeout=600)


async def declare(url: str, topology: Topology) -> None:
    connection = await aio_pika.connect(url)
    async with connection:
        await topology.declare(await connection.channel())


async def live(url: str, topology: Topology, count: int, rate: float) -> None:
    await asyncio.gather(consume(url, topology, count), publish(url, topology, count, rate))


def measure(pid: int, work: object) -> float:
    before = tree_cpu_seconds(pid)
    asyncio.run(work)  # type: ignore[arg-type]
    return tree_cpu_seconds(pid) - before


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=8000)
    parser.add_argument("--rate", type=float, default=1300, help="messages a second over all publishers; 0: unpaced")
    args = parser.parse_args(argv)
    count = args.messages - args.messages % PUBLISHERS
    with private_rabbitmq() as (url, pid):
        for part in ("publish", "drain", "live"):
            topology = Topology(f"brokercost{uuid.uuid4().hex[:8]}")
            asyncio.run(declare(url, topology))
            if part == "drain":
                asyncio.run(publish(url, topology, count, 0))
            started = time.monotonic()
            if part == "publish":
                cpu = measure(pid, publish(url, topology, count, args.rate))
            elif part == "drain":
                cpu = measure(pid, consume(url, topology, count))
            else:
                cpu = measure(pid, live(url, topology, count, args.rate))
            seconds = time.monotonic() - started
            row = {"part": part, "messages": count, "msg_per_s": round(count / seconds), "broker_cpu_ms_per_msg": 0.0}
            row["broker_cpu_ms_per_msg"] = round(cpu * 1000 / count, 3)
            print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
