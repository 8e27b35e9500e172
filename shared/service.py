"""Process wiring shared by every `python -m services.<name>`: uvloop, signals, a clean one-line config error."""

from __future__ import annotations

import asyncio
import errno
import signal
import sys
from collections.abc import Awaitable, Callable

from shared.errors import ConfigError
from shared.logging import fatal, get_logger
from shared.settings import CommonSettings


def warn_renamed_settings(settings: CommonSettings) -> None:
    """One warning per renamed variable still set under its old name (read this release, ignored the next)."""
    log = get_logger("shared.settings")
    for old, new in settings.old_names_used:
        log.warning("renamed setting: use the new name, the old one is read for one release only", old=old, new=new)


def wait_for_stop_signal() -> asyncio.Event:
    """An event set on SIGTERM or SIGINT, so `main` can drain and return instead of being killed mid-write."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


def run_service(main: Callable[[], Awaitable[None]]) -> None:
    """Run a service's async main under uvloop; a ConfigError ends the process with one line and status 2."""
    try:
        import uvloop

        runner: Callable[[Awaitable[None]], None] = uvloop.run  # type: ignore[assignment]
    except ImportError:  # pragma: no cover - uvloop is a dependency on every supported platform
        runner = asyncio.run  # type: ignore[assignment]
    try:
        runner(main())
    except ConfigError as exc:
        fatal(f"configuration error: {exc}")
        sys.exit(2)
    except OSError as exc:
        # A port taken or not allowed is an operator's problem with a clear fix: one line, not a traceback.
        if exc.errno not in (errno.EADDRINUSE, errno.EACCES, errno.EADDRNOTAVAIL):
            raise
        fatal(f"cannot listen: {exc.strerror or exc}")
        sys.exit(2)
    except KeyboardInterrupt:
        pass
