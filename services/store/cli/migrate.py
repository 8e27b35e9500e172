"""`postroom import maildir|mbox …` and `postroom export …`: mail in from other servers and out again."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict
from pathlib import Path

import click

from services.store import Store
from services.store.cli.common import UserError, emit_json, json_option, run_with_store
from services.store.migrate.maildir import DEFAULT_UIDL_FORMAT, MaildirError, MaildirWriter, read_maildir
from services.store.migrate.mbox import MboxError, MboxWriter, read_mbox
from services.store.migrate.message import Candidate
from services.store.migrate.transfer import (
    ExportError,
    ExportReport,
    ImportReport,
    Writer,
    export_messages,
    import_messages,
    require_user,
)

user_option = click.option("--user", "address", required=True, help="The Postroom account the mail goes into.")


@click.group("import")
def import_group() -> None:
    """Bring existing mail into a mailbox (safe to repeat: nothing is stored twice)."""


def _run_import(address: str, source: Path, read: Iterable[Candidate], as_json: bool) -> None:
    try:
        report: ImportReport = run_with_store(lambda store: import_messages(store, address, str(source), read))
    except (MaildirError, MboxError) as exc:
        raise UserError(str(exc)) from None
    for skipped in report.skipped:
        click.echo(f"postroom: skipped {skipped.origin}: {skipped.reason}", err=True)
    if as_json:
        emit_json(report.as_json())
    else:
        click.echo(report.summary())
    if not report.complete:
        raise SystemExit(1)


@import_group.command("maildir")
@click.argument("path", type=click.Path(path_type=Path))
@user_option
@click.option(
    "--uidl-format",
    default=DEFAULT_UIDL_FORMAT,
    show_default=True,
    help="The old Dovecot's pop3_uidl_format, for messages its dovecot-uidlist gives no P (POP3 UIDL) field.",
)
@json_option
def import_maildir(path: Path, address: str, uidl_format: str, as_json: bool) -> None:
    """Import a maildir's INBOX (cur/ and new/), keeping the POP3 UIDLs of Dovecot's dovecot-uidlist."""
    try:
        candidates = read_maildir(path, uidl_format)
    except MaildirError as exc:
        raise UserError(str(exc)) from None
    _run_import(address, path, candidates, as_json)


@import_group.command("mbox")
@click.argument("file", type=click.Path(path_type=Path))
@user_option
@json_option
def import_mbox(file: Path, address: str, as_json: bool) -> None:
    """Import the messages of an mbox file (mboxrd or mboxo)."""
    _run_import(address, file, read_mbox(file), as_json)


@click.command("export")
@click.argument("address")
@click.option("--format", "kind", type=click.Choice(["mbox", "maildir"]), required=True)
@click.argument("dest", type=click.Path(path_type=Path))
@json_option
def export(address: str, kind: str, dest: Path, as_json: bool) -> None:
    """Write a mailbox to DEST: an mbox file (mboxrd), or a maildir with a dovecot-uidlist keeping the UIDLs."""

    async def body(store: Store) -> ExportReport:
        user = await require_user(store, address)
        try:
            writer: Writer = MaildirWriter(dest) if kind == "maildir" else MboxWriter(dest)
        except (MaildirError, MboxError) as exc:
            raise UserError(str(exc)) from None
        except OSError as exc:
            raise UserError(f"cannot write {dest}: {exc.strerror or exc}") from None
        return await export_messages(store, user, writer, ExportReport(user, str(dest), kind))

    try:
        report = run_with_store(body)
    except ExportError as exc:
        raise UserError(str(exc)) from None
    if as_json:
        emit_json(asdict(report))
    else:
        click.echo(report.summary())
