"""`postroom run`: every service as a child process, output prefixed with its name, stopped together."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import sys
from collections.abc import Callable

import click

SERVICES = ("store", "smtp_ingress", "delivery", "pop3")
# After SIGTERM/SIGINT, how long the children get to drain before they are killed.
DEFAULT_GRACE = 30.0
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> Callable[[], None] | None:
    """A preexec hook so a child gets SIGTERM if `postroom run` itself is killed (Linux only; else None)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:  # pragma: no cover - every Linux has a libc
        return None

    def hook() -> None:
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)

    return hook


async def _pump(name: str, width: int, stream: asyncio.StreamReader) -> None:
    prefix = f"{name:<{width}} | ".encode()
    out = sys.stdout.buffer
    while True:
        try:
            line = await stream.readline()
        except (ValueError, asyncio.LimitOverrunError):
            line = await stream.read(65536)
        if not line:
            return
        out.write(prefix + line if line.endswith(b"\n") else prefix + line + b"\n")
        out.flush()


def _say(message: str) -> None:
    click.echo(f"postroom: {message}", err=True)


class Supervisor:
    """Starts the children, forwards stop signals, and stops all of them when one ends unasked."""

    def __init__(self, modules: dict[str, str], grace: float) -> None:
        self.modules = modules
        self.grace = grace
        self.procs: dict[str, asyncio.subprocess.Process] = {}
        self.stopping = False
        self._stop_time = 0.0
        self.failed = False

    def _signal_all(self, sig: int) -> None:
        for proc in self.procs.values():
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(sig)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """First call: pass `sig` on and start the grace timer. A later Ctrl-C (an impatient person): kill.

        Signals arriving together (Ctrl-C reaches a wrapper script too, whose trap then sends SIGTERM) are one
        request, so only a SIGINT more than a second after the first stop escalates.
        """
        loop = asyncio.get_running_loop()
        if self.stopping:
            if sig == signal.SIGINT and loop.time() - self._stop_time > 1.0:
                _say("second interrupt: killing the services")
                self._signal_all(signal.SIGKILL)
            return
        self.stopping = True
        self._stop_time = loop.time()
        self._signal_all(sig)
        loop.call_later(self.grace, self._signal_all, signal.SIGKILL)

    def _environment(self, name: str) -> dict[str, str]:
        """The current environment; `POSTROOM_<NAME>_METRICS_LISTEN` becomes that child's metrics address."""
        env = dict(os.environ)
        own = env.get(f"POSTROOM_{name.upper()}_METRICS_LISTEN")
        if own is not None:
            env["POSTROOM_METRICS_LISTEN"] = own
        elif len(self.modules) > 1 and env.pop("POSTROOM_METRICS_LISTEN", None) is not None:
            # One address for several services cannot work: each keeps its own default port (9101-9104).
            _say(f"{name}: ignoring POSTROOM_METRICS_LISTEN (one address for every service); using its default")
        return env

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.stop, sig)
        width = max(len(name) for name in self.modules)
        pumps: list[asyncio.Task[None]] = []
        hook = _die_with_parent()
        try:
            for name, module in self.modules.items():
                proc = await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    module,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.STDOUT,
                    env=self._environment(name),
                    limit=1 << 20,
                    # Own process group: a terminal's Ctrl-C reaches only us, and we pass it on exactly once.
                    process_group=0,
                    preexec_fn=hook,
                )
                self.procs[name] = proc
                assert proc.stdout is not None
                pumps.append(asyncio.create_task(_pump(name, width, proc.stdout)))
                _say(f"started {name} (pid {proc.pid})")
        except OSError as exc:
            _say(f"could not start {module}: {exc}")
            self.failed = True
            self.stop()
        waits = {asyncio.create_task(proc.wait()): name for name, proc in self.procs.items()}
        pending = set(waits)
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                self._ended(waits[task], task.result())
        await asyncio.gather(*pumps, return_exceptions=True)
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        return 1 if self.failed else 0

    def _ended(self, name: str, code: int) -> None:
        asked = self.stopping
        if not asked or code not in (0, -signal.SIGTERM, -signal.SIGINT):
            self.failed = True
        how = f"killed by signal {-code}" if code < 0 else f"exited with status {code}"
        _say(f"{name} {how}" + ("" if asked else "; stopping the others"))
        if not asked:
            self.stop()


def _parse_modules(only: tuple[str, ...], modules: tuple[str, ...]) -> dict[str, str]:
    if modules:
        chosen: dict[str, str] = {}
    else:
        chosen = {name: f"services.{name}" for name in (only or SERVICES)}
    for item in modules:
        name, sep, module = item.partition("=")
        if not sep or not name or not module:
            raise click.BadParameter("expected NAME=MODULE", param_hint="--module")
        chosen[name] = module
    return chosen


@click.command()
@click.option("--only", multiple=True, type=click.Choice(SERVICES), help="Run only these services (repeatable).")
@click.option(
    "--module", "modules", multiple=True, hidden=True, help="Run child NAME=MODULE instead of the services (tests)."
)
@click.option(
    "--grace",
    type=click.FloatRange(min=0),
    default=DEFAULT_GRACE,
    show_default=True,
    help="Seconds the services get to finish after a stop signal before they are killed.",
)
def run(only: tuple[str, ...], modules: tuple[str, ...], grace: float) -> None:
    """Run every service locally (for development), each as `python -m services.NAME`, until Ctrl-C.

    Each service keeps its default metrics port (9101-9104) unless POSTROOM_<NAME>_METRICS_LISTEN is set,
    e.g. POSTROOM_POP3_METRICS_LISTEN=127.0.0.1:19103.
    """
    chosen = _parse_modules(only, modules)
    code = asyncio.run(Supervisor(chosen, grace).run())
    if code:
        sys.exit(code)
