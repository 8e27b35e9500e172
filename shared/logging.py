"""Structured logging (structlog) on stderr, as readable lines or JSON; one call per process sets it up."""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

import structlog
from structlog.types import EventDict, Processor, WrappedLogger

# Libraries log below WARNING only about their own workings (aiormq frames, asyncio debug): never worth a line.
LIBRARY_LEVEL = logging.WARNING


def _service_field(service: str) -> Processor:
    """Every event names its service, also those of threads and of stdlib loggers that no contextvar reaches."""

    def add(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
        event_dict.setdefault("service", service)
        return event_dict

    return add


def _renderer(fmt: str) -> Processor:
    if fmt == "json":
        # default=repr: an odd object in an event (an exception, a socket) still renders, on the same line.
        return structlog.processors.JSONRenderer(default=repr)
    return structlog.dev.ConsoleRenderer(colors=False)


def configure_logging(level: str = "info", fmt: str = "console", service: str = "postroom") -> None:
    """Route structlog, every library's stdlib logging, warnings and uncaught exceptions to stderr, one format.

    With `fmt="json"` every line is one JSON object: structlog's own events, the records of aiormq, aio_pika,
    aiosmtpd, asyncio/uvloop and aiohttp (through structlog's ProcessorFormatter on the root logger), `warnings`,
    and exceptions nobody caught (in the main thread or another), with a traceback as the `exception` field.
    """
    numeric = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    renderer = _renderer(fmt)
    common: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        _service_field(service),
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[*common, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    structlog.contextvars.bind_contextvars(service=service)

    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*common, structlog.stdlib.add_logger_name],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
        ],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(max(numeric, LIBRARY_LEVEL))
    logging.captureWarnings(True)
    _install_excepthooks()


def _log_uncaught(where: str) -> Callable[[type[BaseException], BaseException, TracebackType | None], None]:
    def hook(kind: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
        if issubclass(kind, KeyboardInterrupt):
            sys.__excepthook__(kind, exc, tb)
            return
        structlog.get_logger("postroom").critical("uncaught exception", where=where, exc_info=(kind, exc, tb))

    return hook


def _install_excepthooks() -> None:
    sys.excepthook = _log_uncaught("main thread")
    thread_hook = _log_uncaught("thread")

    def threads(args: threading.ExceptHookArgs) -> None:
        if args.exc_value is not None:
            thread_hook(args.exc_type, args.exc_value, args.exc_traceback)

    threading.excepthook = threads


def fatal(message: str) -> None:
    """The last line of a service that cannot start (bad setting, port taken), in the format it was asked for.

    It runs before `configure_logging` could (the settings are what failed), so it reads `POSTROOM_LOG_FORMAT`
    itself: with `json` the line is a JSON object like every other, else the plain `postroom: …` line.
    """
    if os.environ.get("POSTROOM_LOG_FORMAT", "").strip().lower() == "json":
        stamp = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        line = json.dumps({"event": message, "level": "critical", "timestamp": stamp, "logger": "postroom"})
        print(line, file=sys.stderr)
    else:
        print(f"postroom: {message}", file=sys.stderr)


def get_logger(name: str) -> Any:
    """A structlog logger tagged with the module name."""
    return structlog.get_logger(name)
