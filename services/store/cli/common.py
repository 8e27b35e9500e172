"""What every `postroom` command shares: settings, one-line user errors, running store calls, tables and JSON."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import click

from services.store import Store, passwords
from services.store.config import StoreSettings
from shared.settings import load_settings

T = TypeVar("T")


class UserError(click.ClickException):
    """A mistake of the person at the keyboard: one line on stderr, exit status 1, never a traceback."""

    exit_code = 1

    def show(self, file: Any = None) -> None:
        # One line whatever the underlying library put in its message.
        click.echo(f"postroom: error: {' '.join(self.format_message().split())}", err=True)


def settings() -> StoreSettings:
    config = load_settings(StoreSettings)
    passwords.configure(config)  # `user add` and `user passwd` hash with the configured argon2id cost
    return config


def connect_store(config: StoreSettings) -> Store:
    """The store of the configured settings, with the CLI's short socket timeouts (a command must not hang)."""
    return Store.connect(
        config.redis_url,
        config.namespace,
        config.redis_cluster,
        trace_retention=config.trace_retention_seconds,
        socket_connect_timeout=5,
        socket_timeout=10,
    )


def run_with_store(action: Callable[[Store], Awaitable[T]]) -> T:
    """Connect to Redis with the configured settings, run `action`, and always close the connection."""

    async def body() -> T:
        store = connect_store(settings())
        try:
            return await action(store)
        finally:
            await store.close()

    return asyncio.run(body())


json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts instead of a table.")


def emit_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, sort_keys=True, default=str))


def render_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain left-aligned table with a header rule; readable in any terminal and in logs."""
    cells = [[str(h) for h in headers], *[["" if c is None else str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def emit_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], empty: str) -> None:
    if not rows:
        click.echo(empty)
        return
    click.echo(render_table(headers, rows))


def emit(as_json: bool, value: Any, headers: Sequence[str], rows: Sequence[Sequence[Any]], empty: str) -> None:
    """`value` as JSON with --json, else `rows` as a table (`empty` when there are none)."""
    if as_json:
        emit_json(value)
    else:
        emit_table(headers, rows, empty)


def remove_or_fail(kind: str, name: str, remove: Callable[[Store], Awaitable[bool]]) -> None:
    """Run `remove`; "KIND NAME removed", or a user error when there was no such thing."""
    if not run_with_store(remove):
        raise UserError(f"no such {kind} {name.strip().lower()}")
    click.echo(f"{kind} {name.strip().lower()} removed")


def read_password_stdin() -> str:
    """The first line of stdin without its line end (as `docker login --password-stdin` reads it)."""
    line = sys.stdin.readline()
    password = line.removesuffix("\n").removesuffix("\r")
    if not password:
        raise UserError("no password on standard input")
    return password


def human_bytes(value: int) -> str:
    """1536 -> "1.5 KiB"; binary units up to TiB."""
    if value < 1024:
        return f"{value} B"
    size = float(value)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        size /= 1024
        if size < 1024 or unit == "TiB":
            break
    return f"{size:.1f} {unit}"
