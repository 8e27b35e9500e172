"""`postroom domain dns DOMAIN`: the records to publish for a local domain, as zone-file lines or JSON."""

from __future__ import annotations

from dataclasses import asdict

import click

from services.store import Store
from services.store.addresses import AddressError, validate_domain
from services.store.cli.accounts import domain
from services.store.cli.common import UserError, emit_json, json_option, run_with_store, settings
from services.store.clientconfig.dns import Record, domain_records


async def dkim_keys(store: Store, name: str) -> list[tuple[str, str]]:
    """(selector, TXT value) of each DKIM key the store holds for the domain (`postroom dkim generate`), oldest
    first; never a private key."""
    return [(key.selector, key.record) for key in await store.dkim.keys_of(name)]


@domain.command("dns")
@click.argument("name")
@json_option
def domain_dns(name: str, as_json: bool) -> None:
    """Print every DNS record DOMAIN needs: MX, SPF, DKIM, DMARC, autoconfig names, SRV for submission and POP3."""
    try:
        name = validate_domain(name)
    except AddressError as exc:
        raise UserError(str(exc)) from None
    config = settings()

    async def load(store: Store) -> list[Record]:
        if not await store.accounts.is_local_domain(name):
            raise UserError(f"no such domain {name}")
        keys = await dkim_keys(store, name)
        return domain_records(
            name, config.hostname, config.client_endpoints, config.autoconfig_listen is not None, keys
        )

    records = run_with_store(load)
    if as_json:
        emit_json([asdict(r) for r in records])
        return
    click.echo(f"; DNS records for {name}: mail served by {config.hostname}")
    if config.autoconfig_listen is None:
        click.echo("; no autoconfig names: POSTROOM_AUTOCONFIG_LISTEN is off")
    for record in records:
        click.echo(f"; {record.purpose}")
        click.echo(record.zone_line())
    click.echo(f"; and {config.hostname} itself: A/AAAA records of its public addresses, with PTRs back to it")
