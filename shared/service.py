"""The skeleton of every `python -m services.<name>`: settings, logging, metrics, health, signals, drain."""

from __future__ import annotations

import asyncio
import errno
import signal
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from shared.errors import ConfigError
from shared.health import HealthServer, ReadinessCheck
from shared.logging import configure_logging, fatal, get_logger
from shared.settings import CommonSettings, load_settings

SettingsT = TypeVar("SettingsT", bound=CommonSettings)


class App(Protocol):
    """What a service's `app.py` gives the runner: the parts of that service, started and drained in order."""

    def checks(self) -> dict[str, ReadinessCheck]:
        """Named readiness checks; each is bounded by the health server's timeout, so it may block on I/O."""
        ...

    async def start(self, stop: asyncio.Event) -> bool:
        """Start serving; False when `stop` was set before the service could start (it then only stops)."""
        ...

    async def stop(self, drain_timeout: float) -> None:
        """Stop taking work, finish what is in hand for at most `drain_timeout` seconds, then close."""
        ...


@dataclass(frozen=True)
class Service(Generic[SettingsT]):
    """One service's parts, for `run`: what differs between the four services is here and in their `app.py`."""

    name: str  # in every log line (`service=`), and in POSTROOM_<NAME>_DRAIN_TIMEOUT
    settings: type[SettingsT]
    app: Callable[[SettingsT], App]
    # Create the service's labelled metric series at zero, so dashboards and alerts never see one missing.
    metrics: Callable[[SettingsT], None]
    # Process-wide set-up from the settings before the app is made (e.g. the password hashing cost).
    setup: Callable[[SettingsT], None] | None = None
    # Called once the service is ready, before it waits for the signal (the ingress freezes the GC's heap here).
    ready: Callable[[], None] | None = None

    def drain_timeout(self, settings: SettingsT) -> float:
        return float(getattr(settings, f"{self.name}_drain_timeout"))


def warn_renamed_settings(settings: CommonSettings) -> None:
    """One warning per renamed variable still set under its old name (read this release, ignored the next)."""
    log = get_logger("shared.settings")
    for old, new in settings.old_names_used:
        log.warning("renamed setting: use the new name, the old one is read for one release only", old=old, new=new)


def wait_for_stop_signal() -> asyncio.Event:
    """An event set on SIGTERM or SIGINT, so the service can drain and return instead of being killed mid-write."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


async def serve(service: Service[SettingsT], settings: SettingsT | None = None) -> None:
    """Load settings (unless given), log, count, serve health, start the app, wait for a signal, drain."""
    settings = load_settings(service.settings) if settings is None else settings
    configure_logging(settings.log_level, settings.log_format, service=service.name)
    warn_renamed_settings(settings)
    log = get_logger(f"services.{service.name}")
    service.metrics(settings)
    if service.setup is not None:
        service.setup(settings)
    stop = wait_for_stop_signal()
    app = service.app(settings)
    # Health first: /healthz answers while the service waits for its broker, and /readyz says why it is not ready.
    health = HealthServer(settings.metrics_listen) if settings.metrics_listen is not None else None
    if health is not None:
        for name, check in app.checks().items():
            health.add_check(name, check)
        await health.start()
    try:
        started = await app.start(stop)
    except BaseException:
        if health is not None:
            await health.stop()
        raise
    if started:
        log.info("ready", service=service.name)
        if service.ready is not None:
            service.ready()
        await stop.wait()
    drain = service.drain_timeout(settings)
    log.info("stopping", drain_timeout=drain)
    await app.stop(drain)
    if health is not None:
        await health.stop()
    log.info("stopped")


def run(service: Service[SettingsT], settings: Callable[[], SettingsT] | None = None) -> None:
    """`python -m services.<name>`: `serve` under uvloop, with start-up errors as one line (see `run_service`)."""
    run_service(lambda: serve(service, None if settings is None else settings()))


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
