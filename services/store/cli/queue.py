"""`postroom queue status | dead list | dead requeue | dead purge`: the queue seen over plain AMQP."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from typing import TypeVar

import click

from services.store.cli.common import UserError, emit_json, emit_table, human_bytes, json_option, settings
from services.store.cli.queue_steer import run_with_admin
from services.store.queue_ops import QueueOps
from shared.queue_id import is_queue_id

T = TypeVar("T")


def run_with_queue(action: Callable[[QueueOps], Awaitable[T]]) -> T:
    async def body() -> T:
        config = settings()
        ops = QueueOps(config.amqp_url, config.namespace, config.retry_schedule)
        try:
            return await action(ops)
        finally:
            await ops.close()

    return asyncio.run(body())


@click.group()
def queue() -> None:
    """The mail queue in RabbitMQ: work, delay (retry) and dead-letter queues."""


@queue.command("status")
@json_option
def status(as_json: bool) -> None:
    """Messages ready and consumers per queue."""
    infos = run_with_queue(lambda ops: ops.status())
    if as_json:
        emit_json([asdict(i) for i in infos])
        return
    rows = [
        [i.name, i.kind if i.delay_seconds is None else f"delay {i.delay_seconds}s", i.messages, i.consumers]
        if i.exists
        else [i.name, i.kind if i.delay_seconds is None else f"delay {i.delay_seconds}s", "-", "(not declared)"]
        for i in infos
    ]
    emit_table(["QUEUE", "KIND", "MESSAGES", "CONSUMERS"], rows, "no queues")


@queue.group()
def dead() -> None:
    """Dead letters: messages that crashed delivery too often."""


@dead.command("list")
@click.option("--limit", type=click.IntRange(min=1), default=100, show_default=True)
@json_option
def dead_list(limit: int, as_json: bool) -> None:
    """List the first dead letters (at most --limit, no other is touched); they stay, moved to the queue's back."""
    letters = run_with_queue(lambda ops: ops.dead_letters(limit))
    if as_json:
        emit_json([asdict(d) for d in letters])
        return
    rows = [
        [
            d.queue_id,
            d.mail_from or "<>",
            ", ".join(d.recipients),
            human_bytes(d.size),
            time.strftime("%Y-%m-%d %H:%M", time.gmtime(d.first_seen)) if d.first_seen else "",
            d.reason,
        ]
        for d in letters
    ]
    emit_table(["QUEUE ID", "FROM", "TO", "SIZE", "FIRST SEEN (UTC)", "REASON"], rows, "no dead letters")


@dead.command("requeue")
@click.argument("queue_ids", nargs=-1)
@click.option("--all", "everything", is_flag=True, help="Requeue every dead letter.")
@json_option
def dead_requeue(queue_ids: tuple[str, ...], everything: bool, as_json: bool) -> None:
    """Move dead letters back to the work queue for another delivery."""
    if bool(queue_ids) == everything:
        raise UserError("give queue ids or --all (not both)")
    bad = [q for q in queue_ids if not is_queue_id(q)]
    if bad:
        raise UserError(f"not a queue id: {bad[0]}")
    moved = run_with_queue(lambda ops: ops.requeue(None if everything else list(queue_ids)))
    if as_json:
        emit_json({"requeued": moved})
        return
    click.echo(f"{moved} message(s) requeued")
    if queue_ids and moved < len(set(queue_ids)):
        raise UserError(f"{len(set(queue_ids)) - moved} of the queue ids were not in the dead-letter queue")


@dead.command("purge")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation at a terminal.")
@json_option
def dead_purge(yes: bool, as_json: bool) -> None:
    """Delete every dead letter, and their queue entries (asks first when run at a terminal)."""
    if not yes and sys.stdin.isatty() and not click.confirm("Delete every dead letter?", default=False):
        raise UserError("not confirmed")
    purged = run_with_admin(lambda admin: admin.purge_dead())
    if as_json:
        emit_json({"purged": purged})
    else:
        click.echo(f"{purged} dead letter(s) deleted")
