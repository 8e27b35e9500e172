"""The `postroom` command line: one entry point for running Postroom and administering it."""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import click

from services.store.accounts import AccountError
from services.store.addresses import AddressError
from services.store.cli.accounts import alias, domain, user
from services.store.cli.common import UserError
from services.store.cli.queue import queue
from services.store.cli.run import run
from services.store.cli.trace import trace
from services.store.queue_ops import QueueError
from shared.errors import ConfigError


def _describe(exc: BaseException) -> str | None:
    """One line for the failures a user can act on; None for a bug."""
    import aiormq
    import redis.exceptions

    if isinstance(exc, AccountError | AddressError | QueueError):
        return str(exc)
    if isinstance(exc, UnicodeError):
        # An argument with bytes that are not UTF-8 (Python keeps them as surrogate escapes) cannot name a key.
        return "arguments must be UTF-8 text"
    if isinstance(exc, aiormq.exceptions.AMQPError):
        return f"RabbitMQ: {exc!r}"
    if isinstance(exc, ConfigError):
        return f"configuration: {exc}"
    if isinstance(exc, redis.exceptions.ConnectionError | redis.exceptions.TimeoutError):
        return f"cannot reach Redis (POSTROOM_REDIS_URL): {exc}"
    if isinstance(exc, redis.exceptions.RedisClusterException):
        return f"cannot reach Redis Cluster (POSTROOM_REDIS_URL): {exc}"
    if isinstance(exc, ConnectionError | TimeoutError | OSError):
        return f"connection failed: {exc}"
    return None


class PostroomGroup(click.Group):
    """A click group whose every failure ends as one `postroom: error: …` line and exit status 1."""

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
            sys.exit(1)
        except click.ClickException as exc:
            if not isinstance(exc, UserError):
                exc = UserError(exc.format_message())
            exc.show()
            sys.exit(1)
        except Exception as exc:  # the promise is "never a traceback": a bug still ends as one line
            message = _describe(exc) or _describe(exc.__cause__ or exc) or f"unexpected {type(exc).__name__}: {exc}"
            if not quiet:
                raise
            UserError(message).show()
            sys.exit(1)
        finally:
            if quiet:
                logging.disable(logging.NOTSET)  # in-process callers (tests) get their logging back
        sys.exit(result if isinstance(result, int) else 0)


@click.group(cls=PostroomGroup, context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Postroom: an SMTP and POP3 mail system. Settings come from POSTROOM_* environment variables."""


cli.add_command(run)
cli.add_command(domain)
cli.add_command(user)
cli.add_command(alias)
cli.add_command(queue)
cli.add_command(trace)


def main() -> None:
    """Console-script entry point (`postroom`)."""
    cli.main(prog_name="postroom")
