"""`postroom dkim generate|show|remove`: signing keys of the local domains and the DNS records that publish them."""

from __future__ import annotations

import click

from services.store import DkimKey
from services.store.cli.common import UserError, emit_json, json_option, run_with_store
from services.store.dkim import ALGORITHMS


@click.group()
def dkim() -> None:
    """DKIM keys: the delivery signs mail from a local domain with them (docs/deliverability.md)."""


@dkim.command("generate")
@click.argument("domain")
@click.option("--selector", help="The selector (default: ALGORITHM-YYYYMMDD).")
@click.option("--algorithm", type=click.Choice(ALGORITHMS), default="rsa", show_default=True)
@json_option
def dkim_generate(domain: str, selector: str | None, algorithm: str, as_json: bool) -> None:
    """Make a key for a local domain and print the DNS TXT record to publish."""
    key = run_with_store(lambda store: store.dkim.generate(domain, selector, algorithm))
    if as_json:
        emit_json(key.public())
        return
    click.echo(f"{key.algorithm} key {key.selector} of {key.domain} generated; publish this TXT record:")
    click.echo(key.zone_line)


@dkim.command("show")
@click.argument("domain")
@json_option
def dkim_show(domain: str, as_json: bool) -> None:
    """Print the DNS TXT records of a domain's keys (the oldest key of each algorithm signs)."""
    keys: list[DkimKey] = run_with_store(lambda store: store.dkim.show(domain))
    if as_json:
        emit_json([k.public() for k in keys])
        return
    if not keys:
        click.echo(f"no DKIM keys for {domain.strip().lower()}")
        return
    for key in keys:
        click.echo(f"; {key.algorithm} selector {key.selector}")
        click.echo(key.zone_line)


@dkim.command("remove")
@click.argument("domain")
@click.argument("selector")
def dkim_remove(domain: str, selector: str) -> None:
    """Remove a key: mail is no longer signed with it (keep its record published while signed mail is in transit)."""
    if not run_with_store(lambda store: store.dkim.remove(domain, selector)):
        raise UserError(f"no DKIM key {selector.strip().lower()} for {domain.strip().lower()}")
    click.echo(f"DKIM key {selector.strip().lower()} of {domain.strip().lower()} removed")
