"""One way to run a service in a test: in-process (on the test's event loop or on a loop thread of its own) or as a
`python -m services.<name>` process, against the real Redis and RabbitMQ and the test's namespace.

    harness.process("delivery", POSTROOM_RETRY_SCHEDULE="1s")   # a child process; POSTROOM_* overrides
    harness.spawn("pop3", POSTROOM_REDIS_URL=nowhere)           # the same, not waiting for /readyz
    harness.run("store", POSTROOM_ADMIN_LISTEN="nowhere")       # run to its exit, output captured
    harness.thread("smtp_ingress", smtp_max_recipients=5)       # in-process, for blocking clients; field overrides
    await harness.in_loop("pop3", pop3_lock_ttl=2.0)            # in-process, on the running loop of an async test

Every service started through a `Harness` is stopped at the end of the test (tests/conftest.py's `harness` and
`harness_in_loop` fixtures). In-process services take settings objects (field names), processes take environment
variables: the two describe the same service, and a test picks the one it needs (a signal, a crash and a real
`__main__` need a process; reading the app's state needs it in-process).
"""

from __future__ import annotations

import asyncio
import os
import poplib
import signal
import smtplib
import ssl
import subprocess
import sys
import threading
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

import uvloop

from tests.helpers import AMQP_URL, REDIS_URL, ROOT, client_tls, free_port, http_status, wait_until_sync

T = TypeVar("T")

SERVICES = ("smtp_ingress", "delivery", "pop3", "store")
HOSTNAME = "mx.postroom.test"
ADMIN_TOKEN = "test-token"


def service_env(namespace: str) -> dict[str, str]:
    """Environment for service processes of one test: its namespace, loopback-only listeners on free ports."""
    return {
        "POSTROOM_NAMESPACE": namespace,
        "POSTROOM_AMQP_URL": AMQP_URL,
        "POSTROOM_REDIS_URL": REDIS_URL,
        "POSTROOM_HOSTNAME": HOSTNAME,
        "POSTROOM_SMTP_LISTEN": f"127.0.0.1:{free_port()}",
        "POSTROOM_SUBMISSION_LISTEN": f"127.0.0.1:{free_port()}",
        "POSTROOM_SMTPS_LISTEN": f"127.0.0.1:{free_port()}",
        "POSTROOM_POP3_LISTEN": f"127.0.0.1:{free_port()}",
        "POSTROOM_POP3S_LISTEN": f"127.0.0.1:{free_port()}",
        "POSTROOM_ADMIN_LISTEN": f"127.0.0.1:{free_port()}",
        "POSTROOM_ADMIN_TOKEN": ADMIN_TOKEN,
        "POSTROOM_LOG_LEVEL": "debug",
    }


class Clients:
    """Blocking protocol clients of a running service's listeners (the test's own TLS trust for the TLS ones)."""

    def port(self, listener: str) -> int:
        raise NotImplementedError

    def smtp(self, listener: str = "smtp", timeout: float = 10) -> smtplib.SMTP:
        if listener == "smtps":
            return smtplib.SMTP_SSL("127.0.0.1", self.port(listener), timeout=timeout, context=client_tls())
        return smtplib.SMTP("127.0.0.1", self.port(listener), timeout=timeout)

    def pop3(self, listener: str = "pop3", timeout: float = 20) -> poplib.POP3:
        if listener == "pop3s":
            return poplib.POP3_SSL("127.0.0.1", self.port(listener), timeout=timeout, context=client_tls())
        return poplib.POP3("127.0.0.1", self.port(listener), timeout=timeout)


# -- processes -----------------------------------------------------------------------------------------------------


class ServiceProcess(Clients):
    """One `python -m services.<name>` child with its own environment; `start` waits for /readyz, `spawn` does not."""

    def __init__(self, name: str, env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        listen = env.get("POSTROOM_METRICS_LISTEN")  # a test's own port, else any free one
        self.metrics_port = int(listen.rsplit(":", 1)[1]) if listen else free_port()
        self.env = {**os.environ, **env, "POSTROOM_METRICS_LISTEN": f"127.0.0.1:{self.metrics_port}"}
        self.log_path = log_dir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}"

    def port(self, listener: str) -> int:
        """The port of a listener (`smtp`, `pop3s`, `admin`, ...) from the process's environment."""
        return int(self.env[f"POSTROOM_{listener.upper()}_LISTEN"].rsplit(":", 1)[1])

    def spawn(self) -> ServiceProcess:
        """Start the process and return at once (for a service that is not meant to become ready)."""
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", f"services.{self.name}"], env=self.env, cwd=ROOT, stdout=log, stderr=log
        )
        return self

    def start(self, timeout: float = 30.0) -> ServiceProcess:
        return self.spawn().wait_ready(timeout)

    def wait_ready(self, timeout: float = 30.0) -> ServiceProcess:
        wait_until_sync(
            lambda: self.alive() and http_status(f"{self.metrics_url}/readyz") == 200,
            timeout,
            what=f"{self.name} ready (log: {self.log_path.read_text(errors='replace')[-2000:]})",
        )
        return self

    def alive(self) -> bool:
        if self.proc is None or self.proc.poll() is not None:
            if self.proc is not None and self.proc.returncode not in (None, 0, -9, -15):
                raise AssertionError(
                    f"{self.name} exited {self.proc.returncode}: {self.log_path.read_text(errors='replace')}"
                )
            return False
        return True

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, timeout: float = 20.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


# -- in-process services -------------------------------------------------------------------------------------------


class InProcess(Protocol):
    """A service built in this process: what the harness needs of each, whatever the service's own shape."""

    app: Any

    async def start(self) -> None: ...

    async def ready(self) -> bool: ...

    def port(self, listener: str) -> int: ...

    async def stop(self) -> None: ...


def settings_for(name: str, namespace: str, **overrides: Any) -> Any:
    """The settings of an in-process service: the test's namespace and brokers, listeners on port 0, no metrics
    listener, short delays; `overrides` are field values."""
    from shared.netaddr import HostPort
    from shared.settings import CommonSettings

    settings_class: type[CommonSettings]
    any_port = HostPort("127.0.0.1", 0)
    values: dict[str, Any] = {
        "namespace": namespace,
        "amqp_url": AMQP_URL,
        "redis_url": REDIS_URL,
        "hostname": HOSTNAME,
        "metrics_listen": None,
    }
    if name == "smtp_ingress":
        from services.smtp_ingress.config import IngressSettings

        settings_class = IngressSettings

        values |= {
            "smtp_listen": any_port,
            "submission_listen": any_port,
            "smtps_listen": any_port,
            "smtp_auth_failure_delay": 0.01,
            "smtp_auth_failure_delay_max": 0.05,
            "smtp_publish_timeout": 5.0,
            "smtp_drain_timeout": 10.0,
            # The inbound checks would ask the machine's resolver about the test domains; the tests of the checks
            # turn them on with a local DNS server (test_inbound.py).
            "inbound_checks": False,
        }
    elif name == "pop3":
        from services.pop3.config import Pop3Settings

        settings_class = Pop3Settings

        values |= {
            "hostname": "pop.postroom.test",
            "pop3_listen": any_port,
            "pop3s_listen": any_port,
            "pop3_auth_failure_delay": 0,
            "pop3_autologout": 30.0,
            "pop3_lock_ttl": 10.0,
        }
    elif name == "store":
        from services.store.config import StoreSettings

        settings_class = StoreSettings

        # Retry steps whose delay queues tests/conftest.py's namespace cleanup removes (60 s and 300 s).
        values |= {"admin_listen": any_port, "admin_token": ADMIN_TOKEN, "retry_schedule": "60s,300s"}
    elif name == "delivery":
        from services.delivery.config import DeliverySettings

        settings_class = DeliverySettings
    else:
        raise ValueError(f"no service {name!r} (one of {', '.join(SERVICES)})")
    return settings_class(**(values | overrides))


class IngressInProcess:
    def __init__(self, settings: Any) -> None:
        from services.smtp_ingress import metrics
        from services.smtp_ingress.app import IngressApp

        metrics.initialise()  # what the service's runner does at start (shared/service.py)
        self.app = IngressApp(settings)

    async def start(self) -> None:
        await self.app.start()

    async def ready(self) -> bool:
        return bool(await self.app.ready())

    def port(self, listener: str) -> int:
        return int(self.app.server.port(listener))

    async def stop(self) -> None:
        await self.app.stop()


class DeliveryInProcess:
    def __init__(self, settings: Any) -> None:
        from services.delivery.app import DeliveryApp

        self.app = DeliveryApp(settings)
        self._stop = asyncio.Event()

    async def start(self) -> None:
        await self.app.start(self._stop)

    async def ready(self) -> bool:
        return bool(await self.app._consuming() and await self.app._publishing())

    def port(self, listener: str) -> int:
        raise ValueError("delivery has no listeners")

    async def stop(self) -> None:
        self._stop.set()
        await self.app.stop()


_TLS: ssl.SSLContext | None = None


def pop3_tls_context() -> ssl.SSLContext:
    """One self-signed server context for the whole run (making a key pair per server is wasted time)."""
    global _TLS
    if _TLS is None:
        from shared.tls import server_context

        _TLS = server_context(None, None, "pop.postroom.test")
    return _TLS


class Pop3InProcess:
    """The POP3 server over its own store connection, or over `backend` (a Store of the caller's, maybe a fake);
    `peer_of` fakes the client address; `throttle` replaces the login throttle."""

    def __init__(self, settings: Any, backend: Any = None, throttle: Any = None, peer_of: Any = None) -> None:
        from services.pop3 import metrics
        from services.pop3.server import Pop3Server, default_peer_of
        from services.pop3.state import ServerContext
        from services.store import Store

        metrics.initialise(settings)  # what the service's runner does at start (shared/service.py)

        self._own_store = backend is None
        store = Store.connect(settings.redis_url, settings.namespace) if backend is None else backend
        self.store = store
        if throttle is None:
            throttle = store.login_throttle(settings.pop3_auth_failure_delay, settings.pop3_auth_failure_delay_max)
        ctx = ServerContext(settings=settings, store=store, tls_context=pop3_tls_context(), throttle=throttle)
        self.app = Pop3Server(ctx, peer_of=peer_of or default_peer_of)

    async def start(self) -> None:
        await self.app.start()

    async def ready(self) -> bool:
        return bool(self.app.serving)

    def port(self, listener: str) -> int:
        return int(self.app.ports[listener])

    async def stop(self) -> None:
        await self.app.stop(grace=1)
        if self._own_store:
            await self.store.close()


class StoreInProcess:
    """The admin API over a store of its own (`cluster`: the Redis at `redis_url` is a cluster)."""

    def __init__(self, settings: Any) -> None:
        from services.store import Store, metrics
        from services.store.api import AdminServer, create_app
        from services.store.queue_ops import QueueOps

        metrics.initialise(settings)  # what the service's runner does at start (shared/service.py)
        self.settings = settings
        token = settings.admin_token.get_secret_value() if settings.admin_token else None
        self.store = Store.connect(
            settings.redis_url, settings.namespace, settings.redis_cluster, socket_connect_timeout=2
        )
        self.queue = QueueOps(settings.amqp_url, settings.namespace, settings.retry_schedule)
        self.app = AdminServer(create_app(self.store, token, self.queue), settings.admin_listen)

    async def start(self) -> None:
        await self.app.start()

    async def ready(self) -> bool:
        return bool(self.app.listening and await self.store.ping())

    def port(self, listener: str = "admin") -> int:
        if listener != "admin":
            raise ValueError(f"the store listens only on admin, not {listener}")
        return int(self.app.port)

    async def stop(self) -> None:
        await self.app.stop()
        await self.queue.close()
        await self.store.close()


def build(name: str, namespace: str, **options: Any) -> InProcess:
    """An in-process service, not started. `options`: settings fields, and for pop3 `backend`/`throttle`/`peer_of`."""
    extra = {key: options.pop(key) for key in ("backend", "throttle", "peer_of") if key in options}
    if extra and name != "pop3":
        raise TypeError(f"{', '.join(extra)}: only for pop3")
    settings = settings_for(name, namespace, **options)
    if name == "smtp_ingress":
        return IngressInProcess(settings)
    if name == "pop3":
        return Pop3InProcess(settings, **extra)
    if name == "store":
        return StoreInProcess(settings)
    return DeliveryInProcess(settings)


@dataclass
class OnThread(Clients):
    """An in-process service on a uvloop event loop in a thread of its own, so a test can use blocking clients."""

    service: InProcess
    loop: asyncio.AbstractEventLoop = field(default_factory=uvloop.new_event_loop)
    thread: threading.Thread | None = None

    @property
    def app(self) -> Any:
        return self.service.app

    @property
    def settings(self) -> Any:
        return self.service.app.settings

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        """Run a coroutine on the service's loop and return its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def start(self, wait_ready: bool = True) -> OnThread:
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True, name="service-loop")
        self.thread.start()
        self.run(self.service.start())
        if wait_ready:
            wait_until_sync(self.ready, 20, what="service ready")
        return self

    def port(self, listener: str) -> int:
        return self.service.port(listener)

    def ready(self) -> bool:
        return self.run(self.service.ready())

    def stop(self) -> None:
        if self.loop.is_running():
            try:
                self.run(self.service.stop(), timeout=60)
            finally:
                self.loop.call_soon_threadsafe(self.loop.stop)
        if self.thread is not None:
            self.thread.join(10)


# -- the harness ---------------------------------------------------------------------------------------------------


class Harness:
    """Starts services for one test (`namespace`, logs under `log_dir`) and stops them all, newest first."""

    def __init__(self, namespace: str, log_dir: Path, env: dict[str, str] | None = None) -> None:
        self.namespace = namespace
        self.log_dir = log_dir
        self.env = env if env is not None else service_env(namespace)
        self._processes: list[ServiceProcess] = []
        self._threads: list[OnThread] = []
        self._in_loop: list[InProcess] = []

    def process(self, name: str, **env: str) -> ServiceProcess:
        """`python -m services.<name>` with the test's environment plus `env`, ready (/readyz 200) on return."""
        return self.spawn(name, **env).wait_ready()

    def run(self, name: str, **env: str) -> subprocess.CompletedProcess[str]:
        """`python -m services.<name>` run to its exit (a refused setting), its output captured as text. The test's
        environment plus `env`, no metrics listener unless asked, and no POSTROOM_* variable of the caller's."""
        inherited = {key: value for key, value in os.environ.items() if not key.startswith("POSTROOM_")}
        return subprocess.run(
            [sys.executable, "-m", f"services.{name}"],
            env={**inherited, **self.env, "POSTROOM_METRICS_LISTEN": "", **env},
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def spawn(self, name: str, **env: str) -> ServiceProcess:
        """`python -m services.<name>` like `process`, returning at once (for one not meant to become ready)."""
        service = ServiceProcess(name, {**self.env, **env}, self.log_dir)
        self._processes.append(service)
        return service.spawn()

    def thread(self, name: str, wait_ready: bool = True, **options: Any) -> OnThread:
        """The service in-process on a loop thread of its own."""
        running = OnThread(build(name, self.namespace, **options))
        self._threads.append(running)
        return running.start(wait_ready)

    async def in_loop(self, name: str, **options: Any) -> Any:
        """The service in-process on the running loop; returns its app (IngressApp, Pop3Server, AdminServer, ...)."""
        service = build(name, self.namespace, **options)
        self._in_loop.append(service)
        await service.start()
        return service.app

    async def stop_in_loop(self) -> None:
        while self._in_loop:
            await self._in_loop.pop().stop()

    def stop(self) -> None:
        """Stop threads and processes (in-loop services are stopped by `stop_in_loop`, on their loop)."""
        try:
            while self._threads:
                self._threads.pop().stop()
        finally:
            while self._processes:
                self._processes.pop().stop()
