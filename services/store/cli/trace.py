"""`postroom trace QUEUE_ID`: a message's life, event by event, in order."""

from __future__ import annotations

import time
from typing import Any

import click

from services.store.cli.common import UserError, emit_json, json_option, run_with_store
from shared.queue_id import is_queue_id

_FIXED = ("time", "event", "service")


def _when(stamp: Any) -> str:
    try:
        seconds = float(stamp)
    except (TypeError, ValueError):
        return str(stamp)
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(seconds)) + f".{int(seconds % 1 * 1000):03d}"


def _details(event: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in event.items() if k not in _FIXED)


@click.command()
@click.argument("queue_id")
@json_option
def trace(queue_id: str, as_json: bool) -> None:
    """Show what happened to a message: accepted, queued, each attempt with the remote reply, the outcome."""
    queue_id = queue_id.strip().upper()
    if not is_queue_id(queue_id):
        raise UserError(f"not a queue id: {queue_id}")
    events = run_with_store(lambda store: store.trace.events(queue_id))
    if not events:
        raise UserError(f"no trace for {queue_id} (unknown, or older than the trace retention)")
    if as_json:
        emit_json({"queue_id": queue_id, "events": events})
        return
    click.echo(f"queue id {queue_id}")
    width = max(len(str(e.get("event", ""))) for e in events)
    for event in events:
        line = f"{_when(event.get('time'))} UTC  {event.get('service', '?'):<12} {event.get('event', '?'):<{width}}"
        click.echo(f"{line}  {_details(event)}".rstrip())
