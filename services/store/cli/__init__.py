"""The `postroom` command line: one entry point for running Postroom and administering it."""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import click

from services.store.accounts import AccountError
from services.store.addresses import AddressError
from services.store.cli import dns as _dns  # noqa: F401  (adds `domain dns`)
from services.store.cli.accounts import alias, domain, user
from services.store.cli.common import UserError
from services.store.cli.dkim import dkim
from services.store.cli.migrate import export, import_group
from services.store.cli.queue import queue
from services.store.cli.queue_steer import COMMANDS as QUEUE_COMMANDS
from services.store.cli.run import run
from services.store.cli.trace import trace
from services.store.queue_ops import BrokerUnavailable, QueueError
from shared.errors import ConfigError

# Exit statuses (sysexits.h for the temporary failure, click's convention for usage errors).
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_TEMPFAIL = 75  # EX_TEMPFAIL: Redis or RabbitMQ cannot be reached now; the same command may work later


def _describe(exc: BaseException) -> tuple[str, int] | None:
    """One line and an exit status for the failures a user can act on; None for a bug."""
    import aiormq
    import redis.exceptions

    if isinstance(exc, BrokerUnavailable):
        return str(exc), EXIT_TEMPFAIL
    if isinstance(exc, AccountError | AddressError | QueueError):
        return str(exc), EXIT_ERROR
    if isinstance(exc, UnicodeError):
        # An argument with bytes that are not UTF-8 (Python keeps them as surrogate escapes) cannot name a key.
        return "arguments must be UTF-8 text", EXIT_ERROR
    if isinstance(exc, aiormq.exceptions.AMQPConnectionError):
        return f"cannot reach RabbitMQ (POSTROOM_AMQP_URL): {exc!r}", EXIT_TEMPFAIL
    if isinstance(exc, aiormq.exceptions.AMQPError):
        return f"RabbitMQ: {exc!r}", EXIT_ERROR
    if isinstance(exc, ConfigError):
        return f"configuration: {exc}", EXIT_ERROR
    if isinstance(exc, redis.exceptions.ConnectionError | redis.exceptions.TimeoutError):
        return f"cannot reach Redis (POSTROOM_REDIS_URL): {exc}", EXIT_TEMPFAIL
    if isinstance(exc, redis.exceptions.RedisClusterException | redis.exceptions.ClusterDownError):
        return f"cannot reach Redis Cluster (POSTROOM_REDIS_URL): {exc}", EXIT_TEMPFAIL
    if isinstance(
        exc,
        redis.exceptions.ReadOnlyError
        | redis.exceptions.OutOfMemoryError
        | redis.exceptions.MasterDownError
        | redis.exceptions.TryAgainError,
    ):
        # A failover caught mid-way, or maxmemory with noeviction: Redis refuses writes until it recovers.
        return f"Redis refuses writes for now (POSTROOM_REDIS_URL): {exc}", EXIT_TEMPFAIL
    if isinstance(exc, ConnectionError | TimeoutError | OSError):
        return f"connection failed: {exc}", EXIT_TEMPFAIL
    return None


def _usage_line(exc: click.UsageError) -> str:
    """click's usage text is several lines; ours is one, with where to find the help."""
    where = exc.ctx.command_path if exc.ctx is not None else "postroom"
    return f"{exc.format_message().rstrip('.')} (see '{where} --help')"


class PostroomGroup(click.Group):
    """A click group whose every failure ends as one `postroom: error: …` line and a status a script can test:
    2 for a usage error, 75 when Redis or RabbitMQ cannot be reached (try again later), 1 for anything else."""

    def main(self, *args: Any, **kwargs: Any) -> Any:
        kwargs["standalone_mode"] = False
        quiet = not os.environ.get("POSTROOM_DEBUG")
        if quiet:
            # Libraries (aiormq, redis) log their own connection failures; we report them as our one line.
            logging.disable(logging.CRITICAL)
        try:
            result = super().main(*args, **kwargs)
        except click.exceptions.Abort:
            UserError("aborted").show()
            sys.exit(EXIT_ERROR)
        except click.exceptions.NoArgsIsHelpError as exc:
            # `postroom domain` alone: the help is what was asked for, but no command ran.
            click.echo(exc.ctx.get_help() if exc.ctx is not None else exc.format_message(), err=True)
            sys.exit(EXIT_USAGE)
        except click.UsageError as exc:
            UserError(_usage_line(exc)).show()
            sys.exit(EXIT_USAGE)
        except click.ClickException as exc:
            if not isinstance(exc, UserError):
                exc = UserError(exc.format_message())
            exc.show()
            sys.exit(EXIT_ERROR)
        except Exception as exc:  # the promise is "never a traceback": a bug still ends as one line
            described = _describe(exc) or (_describe(exc.__cause__) if exc.__cause__ is not None else None)
            if not quiet:
                raise
            message, status = described or (f"unexpected {type(exc).__name__}: {exc}", EXIT_ERROR)
            UserError(message).show()
            sys.exit(status)
        finally:
            if quiet:
                logging.disable(logging.NOTSET)  # in-process callers (tests) get their logging back
        sys.exit(result if isinstance(result, int) else 0)


@click.group(cls=PostroomGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="postroom", prog_name="postroom", message="%(prog)s %(version)s")
def cli() -> None:
    """Postroom: an SMTP and POP3 mail system. Settings come from POSTROOM_* environment variables."""


cli.add_command(run)
cli.add_command(domain)
cli.add_command(user)
cli.add_command(alias)
for command in QUEUE_COMMANDS:
    queue.add_command(command)
cli.add_command(queue)
cli.add_command(trace)
cli.add_command(import_group)
cli.add_command(export)
cli.add_command(dkim)


def main() -> None:
    """Console-script entry point (`postroom`)."""
    cli.main(prog_name="postroom")
