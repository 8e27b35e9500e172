"""`postroom domain|user|alias …`: accounts without touching Redis by hand."""

from __future__ import annotations

import time
from dataclasses import asdict

import click

from services.store import Rate, Store, User, parse_rate
from services.store.addresses import AddressError, validate_address
from services.store.cli.common import (
    UserError,
    emit,
    emit_json,
    emit_table,
    human_bytes,
    json_option,
    read_password_stdin,
    remove_or_fail,
    run_with_store,
)


@click.group()
def domain() -> None:
    """Local domains: mail to them is delivered into mailboxes here."""


@domain.command("add")
@click.argument("name")
def domain_add(name: str) -> None:
    """Add a local domain."""
    added = run_with_store(lambda store: store.accounts.add_domain(name))
    click.echo(f"domain {name.strip().lower()} {'added' if added else 'already exists'}")


@domain.command("list")
@json_option
def domain_list(as_json: bool) -> None:
    """List the local domains."""
    domains = run_with_store(lambda store: store.accounts.list_domains())
    emit(as_json, domains, ["DOMAIN"], [[d] for d in domains], "no domains")


@domain.command("remove")
@click.argument("name")
def domain_remove(name: str) -> None:
    """Remove a local domain (it must have no users left)."""
    remove_or_fail("domain", name, lambda store: store.accounts.remove_domain(name))


@click.group()
def user() -> None:
    """User accounts: an address with a password, a mailbox and an optional quota."""


def _checked(address: str) -> str:
    """Syntax first, so a typo is reported before anyone types a password."""
    try:
        return validate_address(address)
    except AddressError as exc:
        raise UserError(str(exc)) from None


def _new_password(password_stdin: bool) -> str:
    if password_stdin:
        return read_password_stdin()
    password: str = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    if not password:
        raise UserError("the password must not be empty")
    return password


@user.command("add")
@click.argument("address")
@click.option("--password-stdin", is_flag=True, help="Read the password from the first line of standard input.")
@click.option("--quota", type=click.IntRange(min=0), default=0, help="Mailbox size limit in bytes (0: none).")
def user_add(address: str, password_stdin: bool, quota: int) -> None:
    """Add a user; without --password-stdin the password is asked twice, hidden."""
    address = _checked(address)
    password = _new_password(password_stdin)
    created = run_with_store(lambda store: store.accounts.add_user(address, password, quota))
    click.echo(f"user {created.address} added")


@user.command("passwd")
@click.argument("address")
@click.option("--password-stdin", is_flag=True, help="Read the password from the first line of standard input.")
def user_passwd(address: str, password_stdin: bool) -> None:
    """Change a user's password."""
    address = _checked(address)
    password = _new_password(password_stdin)
    run_with_store(lambda store: store.accounts.set_password(address, password))
    click.echo(f"password of {address.strip().lower()} changed")


@user.command("quota")
@click.argument("address")
@click.argument("quota", type=click.IntRange(min=0))
def user_quota(address: str, quota: int) -> None:
    """Set a user's mailbox size limit in bytes (0: none)."""
    run_with_store(lambda store: store.accounts.set_quota(address, quota))
    click.echo(f"quota of {address.strip().lower()} set to {quota}")


def _send_limit(ctx: click.Context, param: click.Parameter, value: str | None) -> Rate | object | None:
    """`N/PERIOD`, `MESSAGES,RECIPIENTS/PERIOD`, or `default` (None: back to POSTROOM_SEND_LIMIT)."""
    if value is None:
        return _UNSET
    text = value.strip()
    if text.lower() == "default":
        return None
    try:
        return parse_rate(text, recipients=True)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


_UNSET = object()


@user.command("update")
@click.argument("address")
@click.option("--quota", type=click.IntRange(min=0), default=None, help="Mailbox size limit in bytes (0: none).")
@click.option(
    "--send-limit",
    metavar="N/PERIOD|default",
    callback=_send_limit,
    help="Messages (and recipients) the user may send per period on 587/465, e.g. 100/1h or 100,1000/1h; "
    "'default': POSTROOM_SEND_LIMIT.",
)
def user_update(address: str, quota: int | None, send_limit: Rate | object | None) -> None:
    """Change a user's quota and/or send limit."""
    if quota is None and send_limit is _UNSET:
        raise click.UsageError("give --quota and/or --send-limit")
    address = _checked(address)

    async def update(store: Store) -> None:
        if quota is not None:
            await store.accounts.set_quota(address, quota)
        if send_limit is not _UNSET:
            await store.accounts.set_send_limit(address, send_limit if isinstance(send_limit, Rate) else None)

    run_with_store(update)
    changes = [] if quota is None else [f"quota {quota}"]
    if send_limit is not _UNSET:
        changes.append(f"send limit {send_limit or 'default'}")
    click.echo(f"user {address.strip().lower()} updated: {', '.join(changes)}")


@user.command("list")
@json_option
def user_list(as_json: bool) -> None:
    """List users with their quota and mailbox usage."""

    async def load(store: Store) -> list[User]:
        users = [await store.accounts.get_user(a) for a in await store.accounts.list_users()]
        return [u for u in users if u is not None]  # None: removed between the two reads

    users = run_with_store(load)
    if as_json:
        emit_json([asdict(u) for u in users])
        return
    rows = [
        [
            u.address,
            human_bytes(u.quota) if u.quota else "none",
            u.send_limit or "default",
            u.messages,
            human_bytes(u.bytes),
            time.strftime("%Y-%m-%d %H:%M", time.gmtime(u.created)),
        ]
        for u in users
    ]
    emit_table(["ADDRESS", "QUOTA", "SEND LIMIT", "MESSAGES", "SIZE", "CREATED (UTC)"], rows, "no users")


@user.command("remove")
@click.argument("address")
def user_remove(address: str) -> None:
    """Remove a user and delete its mailbox."""
    remove_or_fail("user", address, lambda store: store.accounts.remove_user(address))


@click.group()
def alias() -> None:
    """Aliases: an address (or @domain for a catch-all) delivered to one or more other addresses."""


@alias.command("add")
@click.argument("address")
@click.argument("targets", nargs=-1, required=True)
def alias_add(address: str, targets: tuple[str, ...]) -> None:
    """Add or replace an alias; targets may be local or remote addresses."""
    run_with_store(lambda store: store.accounts.add_alias(address, list(targets)))
    click.echo(f"alias {address.strip().lower()} -> {', '.join(t.strip() for t in targets)}")


@alias.command("list")
@json_option
def alias_list(as_json: bool) -> None:
    """List aliases and their targets."""
    aliases = run_with_store(lambda store: store.accounts.list_aliases())
    emit(as_json, aliases, ["ALIAS", "TARGETS"], [[k, ", ".join(v)] for k, v in aliases.items()], "no aliases")


@alias.command("remove")
@click.argument("address")
def alias_remove(address: str) -> None:
    """Remove an alias."""
    remove_or_fail("alias", address, lambda store: store.accounts.remove_alias(address))
