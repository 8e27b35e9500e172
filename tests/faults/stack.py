"""The whole mail path for fault scenarios: ingress and delivery as processes, each of their links to RabbitMQ and
Redis through a FaultProxy, remote domains routed to hostile MXs, and the ledger's view of the result."""

from __future__ import annotations

import asyncio
import random
import threading
import time
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import aio_pika
from aio_pika.abc import AbstractRobustConnection

from services.store import Store
from shared.topology import Topology
from tests.faults.hostile_mx import HostileMX, Script
from tests.faults.ledger import Ledger, Report, Sent
from tests.faults.proxy import FaultProxy, broker_proxy, redis_proxy
from tests.faults.traffic import submit_all
from tests.harness import ServiceProcess
from tests.helpers import AMQP_URL, REDIS_URL, free_port, http_status, wait_until_sync

DOMAIN = "example.test"
USERS = tuple(f"{name}@{DOMAIN}" for name in ("alice", "bob", "carol", "dave"))
PASSWORD = "fault-password"
SINK_DOMAIN = "sink.test"
RETRY = "1s"
# Long enough for a first attempt and a retry or two; short enough that a host that never answers well ends in a
# bounce within a scenario.
LIFETIME = "8s"


@dataclass
class FaultStack:
    """One namespace, its services and proxies; `pool` holds hostile MXs for domains h0.test, h1.test, ..."""

    namespace: str
    log_dir: Path
    pool_size: int = 32
    env: dict[str, str] = field(default_factory=dict)
    delivery_env: dict[str, str] = field(default_factory=dict)
    services: dict[str, ServiceProcess] = field(default_factory=dict)
    pool: list[HostileMX] = field(default_factory=list)
    used: int = 0
    ingress_amqp: FaultProxy | None = None
    delivery_amqp: FaultProxy | None = None
    delivery_redis: FaultProxy | None = None
    sink: HostileMX | None = None
    _last_quiet: tuple[float, ...] | None = None
    _amqp_loop: asyncio.AbstractEventLoop | None = None
    _amqp: AbstractRobustConnection | None = None
    _dead_mark: int = 0

    # -- life cycle -------------------------------------------------------------------------------------------------
    def start(self) -> FaultStack:
        self.ingress_amqp, self.delivery_amqp, self.delivery_redis = broker_proxy(), broker_proxy(), redis_proxy()
        net = f"127.28.{random.randrange(1, 250)}"
        self.sink = HostileMX(f"{net}.250").start()
        self.pool = [HostileMX(f"{net}.{i + 1}").start() for i in range(self.pool_size)]
        routes = [f"{SINK_DOMAIN}={self.sink.route}"] + [f"h{i}.test={mx.route}" for i, mx in enumerate(self.pool)]
        asyncio.run(self._accounts())
        self.env = {
            "POSTROOM_NAMESPACE": self.namespace,
            "POSTROOM_HOSTNAME": "mx.postroom.test",
            "POSTROOM_LOG_LEVEL": "info",
            "POSTROOM_REDIS_URL": REDIS_URL,
            "POSTROOM_SMTP_LISTEN": f"127.0.0.1:{free_port()}",
            "POSTROOM_SUBMISSION_LISTEN": "",
            "POSTROOM_SMTPS_LISTEN": "",
            "POSTROOM_POP3_LISTEN": f"127.0.0.1:{free_port()}",
            "POSTROOM_POP3S_LISTEN": "",
            "POSTROOM_SMTP_PUBLISH_TIMEOUT": "3s",
            "POSTROOM_RETRY_SCHEDULE": RETRY,
            "POSTROOM_MAX_QUEUE_LIFETIME": LIFETIME,
            "POSTROOM_TRANSPORT_MAP": ",".join(routes),
            "POSTROOM_DELIVERY_REDIS_TIMEOUT": "3s",
            "POSTROOM_DELIVERY_PREFETCH": "16",
            "POSTROOM_DELIVERY_CONCURRENCY": "16",
        }
        self.delivery_env = {
            # The delivery's outbound SMTP timeouts, short so a silent MX costs seconds.
            **{f"POSTROOM_RELAY_{what}_TIMEOUT": "3s" for what in ("CONNECT", "GREETING", "COMMAND", "DATA")},
        }
        self.start_service("smtp_ingress")
        self.start_service("delivery")
        return self

    def start_service(self, name: str) -> ServiceProcess:
        """Start (or start again) one service: the ingress talks to the broker through `ingress_amqp`, the delivery
        to the broker and Redis through `delivery_amqp` and `delivery_redis`."""
        assert self.ingress_amqp and self.delivery_amqp and self.delivery_redis
        env = dict(self.env)
        # Heartbeats every second: a blackholed connection is noticed (by both ends) within seconds, not minutes; and
        # reconnecting after half a second rather than aio_pika's 5.
        if name == "smtp_ingress":
            env["POSTROOM_AMQP_URL"] = self.ingress_amqp.amqp_url.rstrip("/") + "/?heartbeat=1&reconnect_interval=0.5"
        elif name == "delivery":
            env.update(self.delivery_env)
            env["POSTROOM_AMQP_URL"] = self.delivery_amqp.amqp_url.rstrip("/") + "/?heartbeat=1&reconnect_interval=0.5"
            env["POSTROOM_REDIS_URL"] = self.delivery_redis.redis_url
        else:
            env["POSTROOM_AMQP_URL"] = AMQP_URL
        service = ServiceProcess(name, env, self.log_dir)
        self.services[name] = service
        return service.start(timeout=60)

    def stop(self) -> None:
        for service in reversed(list(self.services.values())):
            service.stop()
        if self._amqp_loop is not None:
            if self._amqp is not None:
                asyncio.run_coroutine_threadsafe(self._amqp.close(), self._amqp_loop).result(10)
            self._amqp_loop.call_soon_threadsafe(self._amqp_loop.stop)
        for proxy in (self.ingress_amqp, self.delivery_amqp, self.delivery_redis):
            if proxy is not None:
                proxy.stop()
        for mx in [*self.pool, *([self.sink] if self.sink else [])]:
            mx.stop()

    async def _accounts(self) -> None:
        store = Store.connect(REDIS_URL, self.namespace)
        try:
            await store.accounts.add_domain(DOMAIN)
            for user in USERS:
                await store.accounts.add_user(user, PASSWORD)
        finally:
            await store.close()

    # -- the pieces a scenario uses ---------------------------------------------------------------------------------
    @property
    def next_domain(self) -> str:
        """The domain the next `hostile()` call routes (for scripts that name its recipients)."""
        return f"h{self.used}.test"

    def hostile(self, *scripts: Script) -> tuple[HostileMX, str]:
        """A fresh hostile MX of the pool following `scripts`, and the domain routed to it."""
        assert self.used < len(self.pool), "the hostile MX pool is used up: raise FaultStack.pool_size"
        mx = self.pool[self.used]
        mx.set_scripts(list(scripts) or [Script()])
        domain = f"h{self.used}.test"
        self.used += 1
        return mx, domain

    @property
    def smtp_port(self) -> int:
        return int(self.env["POSTROOM_SMTP_LISTEN"].rsplit(":", 1)[1])

    def send(self, ledger: Ledger, recipients: Iterable[str], count: int = 1, sender: str = USERS[0]) -> list[Sent]:
        messages = [ledger.message(sender, list(recipients)) for _ in range(count)]
        return asyncio.run(submit_all(messages, self.smtp_port))

    def heal(self) -> None:
        """Every proxy back to passing bytes; wait until every service says it is ready again."""
        for proxy in (self.ingress_amqp, self.delivery_amqp, self.delivery_redis):
            assert proxy is not None
            proxy.pass_through()
        for service in self.services.values():
            wait_until_sync(
                lambda service=service: http_status(f"{service.metrics_url}/readyz") == 200,  # type: ignore[misc]
                60,
                what=f"{service.name} ready again",
            )

    # -- waiting for the outcome ----------------------------------------------------------------------------------
    def scan(self, ledger: Ledger) -> None:
        """Read every mailbox and every MX into `ledger` (from scratch: copies are sets, so scanning again is safe)."""
        ledger.copies.clear()
        ledger.bounces.clear()
        ledger.delays.clear()

        async def mailboxes() -> None:
            store = Store.connect(REDIS_URL, self.namespace)
            try:
                await ledger.scan_store(store, USERS)
            finally:
                await store.close()

        asyncio.run(mailboxes())
        for mx in [*self.pool, *([self.sink] if self.sink else [])]:
            ledger.scan_mx(mx)

    def quiet(self) -> bool:
        """Nothing ready in the work or delay queue, nothing in the delivery's hands, and the count of handled
        messages the same as at the previous call (so nothing happened in between)."""
        depth = self._ready(dead=False)
        service = self.services["delivery"]
        in_flight = metric(service, "postroom_delivery_in_flight_messages")
        handled = metric(service, "postroom_delivery_messages_total")
        observed = (depth, in_flight, handled)
        previous, self._last_quiet = self._last_quiet, observed
        return depth == 0 and in_flight == 0 and previous == observed

    def settle(self, ledger: Ledger, messages: list[Sent], timeout: float = 90) -> Report:
        """Wait until nothing is left to do (every queue empty, the delivery idle), then read the outcome of
        `messages` into the ledger: a message that is still missing then will not arrive."""
        self._last_quiet = None
        deadline = time.monotonic() + timeout
        while not self.quiet():
            if time.monotonic() > deadline:
                raise AssertionError(f"the stack never went quiet in {timeout}s (queues, in flight, handled)")
            time.sleep(0.25)
        self.scan(ledger)
        return ledger.report([sent.token for sent in messages])

    def dead_letters(self) -> int:
        """Messages in the dead-letter queue now."""
        return self._ready(dead=True)

    def mark(self) -> None:
        """Remember the dead letters so far: `new_dead_letters` counts from here (the stack is shared by tests)."""
        self._dead_mark = self.dead_letters()

    def new_dead_letters(self) -> int:
        return self.dead_letters() - self._dead_mark

    def _ready(self, dead: bool) -> int:
        if self._amqp_loop is None:
            self._amqp_loop = asyncio.new_event_loop()
            threading.Thread(target=self._amqp_loop.run_forever, daemon=True, name="fault-stack-amqp").start()
        return asyncio.run_coroutine_threadsafe(self._depth(dead), self._amqp_loop).result(30)

    async def _depth(self, dead: bool) -> int:
        """Ready messages in the work and delay queues (or the dead queue), over one connection kept open."""
        if self._amqp is None or self._amqp.is_closed:
            self._amqp = await aio_pika.connect_robust(AMQP_URL, timeout=10)
        topology = Topology(self.namespace)
        names = [topology.dead] if dead else [topology.incoming, topology.delay_queue(1)]
        total = 0
        for name in names:
            channel = await self._amqp.channel()
            try:
                declared = await channel.declare_queue(name, passive=True)
                total += int(declared.declaration_result.message_count or 0)
            except aio_pika.exceptions.ChannelClosed:
                pass  # not declared yet
            finally:
                if not channel.is_closed:
                    await channel.close()
        return total


def metric(service: ServiceProcess, name: str, label: str = "") -> float:
    """The sum of every series of `name` on the service's /metrics page (those holding `label`, e.g.
    `result="deferred"`, when given)."""
    with urllib.request.urlopen(f"{service.metrics_url}/metrics", timeout=10) as response:
        lines = response.read().decode().splitlines()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in lines
        if line.startswith(name) and line[len(name) : len(name) + 1] in ("{", " ") and label in line
    )
