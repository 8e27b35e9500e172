"""`postroom queue list | flush | hold | release | delete`: the messages waiting for delivery, seen and steered."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import click

from services.store.cli.common import (
    UserError,
    connect_store,
    emit_json,
    emit_table,
    human_bytes,
    json_option,
    settings,
)
from services.store.queue_admin import FlushReport, QueueAdmin, UnknownQueueId, WrongState
from services.store.queue_index import DEAD, DEFERRED, HELD, Filter, QueueEntry
from services.store.queue_ops import QueueOps

T = TypeVar("T")


def run_with_admin(action: Callable[[QueueAdmin], Awaitable[T]]) -> T:
    """Run `action` with the store and the broker of the configured settings; unknown ids are a one-line error."""

    async def body() -> T:
        config = settings()
        store = connect_store(config)
        ops = QueueOps(config.amqp_url, config.namespace, config.retry_schedule)
        try:
            return await action(QueueAdmin(store, ops, "cli"))
        except (UnknownQueueId, WrongState) as exc:
            raise UserError(str(exc)) from None
        finally:
            await ops.close()
            await store.close()

    return asyncio.run(body())


def _ids(queue_ids: tuple[str, ...]) -> list[str]:
    return [q.strip().upper() for q in queue_ids]


def _when(stamp: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(stamp)) if stamp else "-"


def _state(entry: QueueEntry, now: float) -> str:
    return f"{entry.state} (overdue)" if entry.overdue(now) else entry.state


def print_entries(entries: list[QueueEntry]) -> None:
    """Like Postfix's mailq: one block per message, the recipients left and the reason of the last deferral."""
    now = time.time()
    if not entries:
        click.echo("Mail queue is empty")
        return
    rows = [
        [
            e.queue_id,
            _state(e, now),
            human_bytes(e.size),
            _when(e.arrival),
            e.sender or "<>",
            e.attempts,
            _when(e.next_attempt),
        ]
        for e in entries
    ]
    emit_table(["QUEUE ID", "STATE", "SIZE", "ARRIVAL (UTC)", "SENDER", "ATTEMPTS", "NEXT ATTEMPT (UTC)"], rows, "")
    for entry in entries:
        click.echo(f"\n{entry.queue_id}  {entry.last_error or '(no error recorded)'}")
        for recipient in entry.recipients:
            click.echo(f"    {recipient}")
    click.echo(f"\n-- {human_bytes(sum(e.size for e in entries))} in {len(entries)} message(s).")


@click.command("list")
@click.option("--deferred", "wanted", flag_value=DEFERRED, help="Only messages waiting for a retry.")
@click.option("--held", "wanted", flag_value=HELD, help="Only held messages.")
@click.option("--dead", "wanted", flag_value=DEAD, help="Only dead-lettered messages.")
@click.option("--sender", default="", help="Only messages from this envelope sender.")
@click.option("--recipient", default="", help="Only messages with this recipient left.")
@click.option("--domain", default="", help="Only messages with a recipient left in this domain.")
@json_option
def list_messages(wanted: str | None, sender: str, recipient: str, domain: str, as_json: bool) -> None:
    """Messages not yet finished: deferred, held, being delivered, or dead-lettered."""
    where = Filter(states=(wanted,) if wanted else (), sender=sender, recipient=recipient, domain=domain)
    entries = run_with_admin(lambda admin: admin.entries(where))
    if as_json:
        now = time.time()
        emit_json([e.as_json(now) for e in entries])
        return
    print_entries(entries)


def _report(report: FlushReport, as_json: bool, verb: str) -> None:
    if as_json:
        emit_json({"flushed": report.flushed, "not_waiting": report.not_waiting, "gone": report.gone})
        return
    for queue_id in report.flushed:
        click.echo(f"{queue_id}: {verb}")
    for queue_id in report.not_waiting:
        click.echo(f"{queue_id}: not waiting in a delay queue (being delivered now, or held)")
    for queue_id in report.gone:
        click.echo(f"{queue_id}: no copy left in any delay queue; removed from the index")


@click.command("flush")
@click.argument("queue_ids", nargs=-1)
@click.option("--domain", default="", help="Every deferred message with a recipient in this domain.")
@click.option("--all", "everything", is_flag=True, help="Every deferred message.")
@json_option
def flush_messages(queue_ids: tuple[str, ...], domain: str, everything: bool, as_json: bool) -> None:
    """Retry deferred messages now, without waiting for their delay."""
    if sum((bool(queue_ids), bool(domain), everything)) != 1:
        raise click.UsageError("give queue ids, --domain D or --all (one of them)")
    report = run_with_admin(lambda admin: admin.flush(_ids(queue_ids), domain, everything))
    _report(report, as_json, "flushed")


@click.command("hold")
@click.argument("queue_ids", nargs=-1, required=True)
@json_option
def hold_messages(queue_ids: tuple[str, ...], as_json: bool) -> None:
    """Keep messages from being attempted until released."""
    held = run_with_admin(lambda admin: admin.hold(_ids(queue_ids)))
    if as_json:
        emit_json({"held": held})
        return
    for queue_id in held:
        click.echo(f"{queue_id}: held")


@click.command("release")
@click.argument("queue_ids", nargs=-1, required=True)
@json_option
def release_messages(queue_ids: tuple[str, ...], as_json: bool) -> None:
    """Release held messages and retry them now."""
    report = run_with_admin(lambda admin: admin.release(_ids(queue_ids)))
    _report(report, as_json, "released and flushed")


@click.command("delete")
@click.argument("queue_ids", nargs=-1, required=True)
@click.option("--bounce", is_flag=True, help="Return each message to its sender with a delivery status report.")
@json_option
def delete_messages(queue_ids: tuple[str, ...], bounce: bool, as_json: bool) -> None:
    """Delete messages from the queue: never attempted again."""
    ids = _ids(queue_ids)
    report = run_with_admin(lambda admin: admin.delete(ids, bounce))
    if as_json:
        emit_json({"deleted": ids, "bounce": bounce, "flushed": report.flushed})
        return
    for queue_id in ids:
        click.echo(f"{queue_id}: deleted" + (" (a report goes to the sender)" if bounce else ""))


COMMANDS = (list_messages, flush_messages, hold_messages, release_messages, delete_messages)
