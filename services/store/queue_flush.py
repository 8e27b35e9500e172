"""Flush: bring chosen deferred messages out of their delay queues into `incoming` now, over plain AMQP.

A delay queue hands out no message by id and expires only at its head, so a flush cycles each delay queue once:
every ready message is taken with basic.get (unacked), copied on a confirming channel to `incoming` when chosen or
back to the tail of its delay queue otherwise, and acked only after the broker confirmed the copies of its batch.
A message put back keeps its due time: it carries a per-message expiration of what was left of its wait (from the
queue index's next attempt), so the cycle does not restart its delay. (RabbitMQ expires messages at a queue's
head only: a message put back behind one published during the cycle waits for that one; a flush is an operator's
action, not a steady state.)

A crash, or a refused publish, half-way loses nothing: the unacked originals go back to their queue. It can leave a
message in two copies (the original and its confirmed copy): the delivery of a copy that may have been worked on
before reads the message's progress record and records every outcome before its next step, so the later copy finds
its recipients settled and ends without an attempt (services/store/queue_index.py, tests/delivery/test_queue_*.py).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable

import aio_pika
from aio_pika.abc import AbstractIncomingMessage

from services.store.queue_ops import MAX_CYCLE, QueueOps, copy, cycle

# What was left of a message's wait, by queue id (None: not known, the message waits its queue's whole delay).
DueTimes = Callable[[list[str]], Awaitable[dict[str, float]]]
# Told of the queue ids of each batch moved, once their copies are in `incoming`.
Moved = Callable[[list[str]], Awaitable[None]]


async def flush(ops: QueueOps, chosen: Callable[[str], bool], due: DueTimes, moving: Moved | None = None) -> list[str]:
    """Move the messages of every delay queue whose queue id is `chosen` to `incoming`; their queue ids. `moving`
    hears of the queue ids of each batch as soon as the broker confirmed their copies, before their originals are
    acked: a trace written there comes ahead of the delivery's events for the copies, as a rule."""
    moved: list[str] = []
    budget = MAX_CYCLE
    for seconds in ops.delays:
        if budget <= 0:
            break
        taken = await _cycle(ops, ops.topology.delay_queue(seconds), chosen, due, budget, moving)
        budget -= taken[1]
        moved += taken[0]
    return moved


async def _cycle(
    ops: QueueOps, name: str, chosen: Callable[[str], bool], due: DueTimes, budget: int, moving: Moved | None
) -> tuple[list[str], int]:
    """One pass over delay queue `name`: (queue ids moved to incoming, messages taken)."""
    moved: list[str] = []
    told = 0  # how many of `moved` `moving` has heard of

    async def route(batch: list[AbstractIncomingMessage]) -> list[tuple[aio_pika.Message, str]]:
        ids = [str(m.message_id or "") for m in batch]
        picks = [chosen(i) for i in ids]
        left = await due([i for i, pick in zip(ids, picks, strict=True) if not pick])
        now = time.time()
        moved.extend(i for i, pick in zip(ids, picks, strict=True) if pick)
        return [
            (copy(m), ops.topology.incoming)
            if pick
            else (copy(m, expiration=max(0.0, left[i] - now) if i in left else None), name)
            for m, i, pick in zip(batch, ids, picks, strict=True)
        ]

    async def confirmed(batch: list[AbstractIncomingMessage]) -> None:
        nonlocal told
        if moving is not None and len(moved) > told:
            await moving(moved[told:])
        told = len(moved)

    async with ops.channel(confirms=True) as channel:
        taken = await cycle(channel, name, budget, route, "queued", confirmed)
    return moved, taken


def ids_in(values: Iterable[str]) -> Callable[[str], bool]:
    wanted = set(values)
    return wanted.__contains__
