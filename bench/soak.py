"""Chaos soak: the whole stack under mixed traffic while services, RabbitMQ and Redis are killed and restarted and
the fault proxies flip; at the end a ledger compares every 250 with what was stored, relayed or bounced.

Not part of the test suite. It runs its own RabbitMQ node (tests/rabbitmq_node.py) and redis-server
(tests/faults/servers.py), which it kills and restarts; the shared ones are never touched. Redis runs with an
append-only file fsynced on every write (`--appendfsync always`), so a SIGKILL loses nothing Redis acknowledged.
Usage: `python -m bench.soak --minutes N`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aio_pika

from bench.stack import ROOT, free_port
from services.store import Store
from shared.topology import Topology
from tests.faults.hostile_mx import HostileMX, Script
from tests.faults.ledger import Ledger, Report, Sent
from tests.faults.proxy import Direction, FaultProxy
from tests.faults.servers import PrivateRedis
from tests.faults.traffic import download_and_delete, submit
from tests.rabbitmq_node import RabbitMQNode, unavailable_reason

RESULTS = ROOT / "bench" / "results"
DOMAIN = "soak.test"
SINK = "sink.test"
USERS = tuple(f"user{i}@{DOMAIN}" for i in range(6))
PASSWORD = "soak-password"
SERVICES = ("smtp_ingress", "delivery", "pop3", "store")
RETRY = "1s,2s,5s"
DELAYS = (1, 2, 5)


def bounce_rule(address: str) -> bytes | None:
    """The sink refuses `bounce-*` recipients for good: each such message must come back as one bounce."""
    return b"550 5.1.1 <" + address.encode() + b">: no such user\r\n" if address.startswith("bounce-") else None


@dataclass
class Service:
    """One service process, restarted at will; readiness is not waited for (the chaos goes on meanwhile)."""

    name: str
    env: dict[str, str]
    log_dir: Path
    metrics_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {**self.env, "POSTROOM_METRICS_LISTEN": f"127.0.0.1:{self.metrics_port}"}
        log = (self.log_dir / f"{self.name}.log").open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", f"services.{self.name}"], env=env, cwd=ROOT, stdout=log, stderr=log
        )

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/readyz", timeout=2) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()

    def metric(self, name: str) -> float:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as response:
            lines = response.read().decode().splitlines()
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in lines
            if line.startswith(name) and line[len(name) : len(name) + 1] in ("{", " ")
        )


class Soak:
    """The stack, the traffic, the chaos and the ledger of one run."""

    def __init__(self, args: argparse.Namespace, base: Path) -> None:
        self.args = args
        self.random = random.Random(args.seed)
        self.namespace = f"soak{uuid.uuid4().hex[:8]}"
        self.log_dir = RESULTS / self.namespace
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.redis = PrivateRedis(base, args.appendfsync)
        self.rabbit = RabbitMQNode()
        self.sink = HostileMX(f"127.31.{self.random.randrange(1, 250)}.1", Script(rcpt_rule=bounce_rule))
        self.amqp_proxy: FaultProxy | None = None
        self.redis_proxy: FaultProxy | None = None
        self.services: dict[str, Service] = {}
        self.ledger = Ledger()
        self.chaos: Counter[str] = Counter()
        self.kinds: Counter[str] = Counter()
        self.pop3_sessions: Counter[str] = Counter()
        self.stopping = asyncio.Event()
        self.in_flight: set[asyncio.Task[Any]] = set()

    # -- the stack --------------------------------------------------------------------------------------------------
    def start(self) -> None:
        self.redis.start()
        self.rabbit.start()
        self.amqp_proxy = FaultProxy("127.0.0.1", self.rabbit.port).start()
        self.redis_proxy = FaultProxy("127.0.0.1", self.redis.port).start()
        self.sink.start()
        asyncio.run(self._accounts())
        cheap = {
            "POSTROOM_ARGON2_MEMORY_KIB": "1024",
            "POSTROOM_ARGON2_TIME_COST": "1",
            "POSTROOM_ARGON2_PARALLELISM": "1",
        }
        env = {
            **os.environ,
            **cheap,
            "POSTROOM_NAMESPACE": self.namespace,
            "POSTROOM_HOSTNAME": "soak.postroom.test",
            "POSTROOM_LOG_LEVEL": self.args.log_level,
            "POSTROOM_AMQP_URL": self.amqp_proxy.url(self.rabbit.url).rstrip("/")
            + "/?heartbeat=5&reconnect_interval=1",
            "POSTROOM_REDIS_URL": self.redis_proxy.url(self.redis.url),
            "POSTROOM_DELIVERY_REDIS_TIMEOUT": "5s",
            "POSTROOM_SMTP_LISTEN": f"127.0.0.1:{free_port()}",
            "POSTROOM_SUBMISSION_LISTEN": "",
            "POSTROOM_SMTPS_LISTEN": "",
            "POSTROOM_POP3_LISTEN": f"127.0.0.1:{free_port()}",
            "POSTROOM_POP3S_LISTEN": "",
            "POSTROOM_ADMIN_LISTEN": f"127.0.0.1:{free_port()}",
            "POSTROOM_ADMIN_TOKEN": "soak",
            "POSTROOM_SMTP_PUBLISH_TIMEOUT": "5s",
            "POSTROOM_RETRY_SCHEDULE": RETRY,
            "POSTROOM_MAX_QUEUE_LIFETIME": "1h",
            "POSTROOM_TRANSPORT_MAP": f"{SINK}={self.sink.route}",
        }
        self.env = env
        # The delivery's outbound SMTP timeouts (the ingress's POSTROOM_SMTP_COMMAND_TIMEOUT is its idle wait).
        relay = {f"POSTROOM_RELAY_{what}_TIMEOUT": "10s" for what in ("CONNECT", "GREETING", "COMMAND", "DATA")}
        for name in SERVICES:
            service = Service(name, {**env, **(relay if name == "delivery" else {})}, self.log_dir)
            self.services[name] = service
            service.start()
        self._wait(lambda: all(s.ready() for s in self.services.values()), 120, "every service ready")

    async def _accounts(self) -> None:
        store = Store.connect(self.redis.url, self.namespace)
        try:
            await store.accounts.add_domain(DOMAIN)
            for user in USERS:
                await store.accounts.add_user(user, PASSWORD)
        finally:
            await store.close()

    def stop(self) -> None:
        for service in self.services.values():
            service.stop()
        # The node's own logs go with its directory: keep a copy next to the services' logs.
        shutil.copytree(self.rabbit.directory / "log", self.log_dir / "rabbitmq", dirs_exist_ok=True)
        for proxy in (self.amqp_proxy, self.redis_proxy):
            if proxy is not None:
                proxy.stop()
        self.sink.stop()
        self.rabbit.stop()
        self.redis.stop()

    @staticmethod
    def _wait(predicate: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out after {timeout}s waiting for {what}")
            time.sleep(0.5)

    @property
    def smtp_port(self) -> int:
        return int(self.env["POSTROOM_SMTP_LISTEN"].rsplit(":", 1)[1])

    @property
    def pop3_port(self) -> int:
        return int(self.env["POSTROOM_POP3_LISTEN"].rsplit(":", 1)[1])

    # -- traffic ----------------------------------------------------------------------------------------------------
    def new_message(self) -> Sent:
        rnd = self.random
        sender = rnd.choice(USERS)
        kind = rnd.choices(["local", "remote", "mixed", "bounce"], weights=[40, 25, 15, 20])[0]
        serial = len(self.ledger.sent)
        recipients: list[str] = []
        if kind in ("local", "mixed"):
            recipients += rnd.sample(USERS, rnd.randint(1, 2))
        if kind in ("remote", "mixed"):
            recipients += [f"r{serial}-{i}@{SINK}" for i in range(rnd.randint(1, 2))]
        if kind == "bounce":
            recipients.append(f"bounce-{serial}@{SINK}")
            if rnd.random() < 0.5:
                recipients.append(rnd.choice(USERS))
        size = rnd.choice([1024, 2048, 4096, 4096, 16384, 131072])
        self.kinds[kind] += 1
        return self.ledger.message(sender, recipients, size=size, subject=f"soak {kind}")

    async def traffic(self) -> None:
        """A message every 1/rate seconds, at most `concurrency` sessions at a time."""
        slots = asyncio.Semaphore(self.args.concurrency)
        period = 1 / self.args.rate
        while not self.stopping.is_set():
            await slots.acquire()
            task = asyncio.create_task(submit(self.new_message(), self.smtp_port, timeout=30))
            task.add_done_callback(lambda _: slots.release())
            self.in_flight.add(task)
            task.add_done_callback(self.in_flight.discard)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), period)

    async def pop3(self) -> None:
        """Download and delete a random maildrop every couple of seconds."""
        while not self.stopping.is_set():
            user = self.random.choice(USERS)
            deleted = await asyncio.to_thread(download_and_delete, self.ledger, self.pop3_port, user, PASSWORD, 20)
            self.pop3_sessions["downloaded-and-deleted" if deleted else "nothing-deleted"] += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), self.random.uniform(1, 3))

    # -- chaos ------------------------------------------------------------------------------------------------------
    async def chaos_loop(self) -> None:
        while not self.stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), self.args.interval)
            if self.stopping.is_set():
                return
            await asyncio.to_thread(self.heal_proxies)
            action = self.random.choices(
                ["kill-service", "restart-rabbitmq", "restart-redis", "proxy"], weights=[40, 10, 15, 35]
            )[0]
            try:
                done = await asyncio.to_thread(getattr(self, "_" + action.replace("-", "_")))
            except Exception as exc:  # e.g. a node slow to come back: recover() at the end tries again
                self.chaos[f"failed:{action}"] += 1
                done = f"{action} failed: {type(exc).__name__}: {exc}"
                print(f"chaos step {done}", flush=True)
            self.chaos_log(done)

    def chaos_log(self, event: str) -> None:
        """A line per fault in chaos.log next to the services' logs, timed as they are (UTC), to match them up."""
        stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        with (self.log_dir / "chaos.log").open("a") as log:
            log.write(f"{stamp} {event}\n")

    def heal_proxies(self) -> None:
        for proxy in (self.amqp_proxy, self.redis_proxy):
            assert proxy is not None
            proxy.pass_through()

    def _kill_service(self) -> str:
        name = self.random.choice(SERVICES)
        service = self.services[name]
        service.kill()
        self.chaos[f"kill:{name}"] += 1
        service.start()
        return f"kill:{name} (restarted)"

    def _restart_rabbitmq(self) -> str:
        crash = self.random.random() < 0.5
        what = "rabbitmq:" + ("kill" if crash else "stop")
        self.chaos[what] += 1
        try:
            self.rabbit.restart(crash=crash)
        except AssertionError as exc:
            # Seen now and then: the node does not come up whole. Keep its log, kill whatever runs, start again.
            self.chaos_log(f"{what}: the node did not come up ({exc}); its log:\n{self.rabbit.log_tail()}")
            self.rabbit.restart(crash=True)
            return f"{what} (up again at the second start)"
        return f"{what} (up again)"

    def _restart_redis(self) -> str:
        self.redis.kill()
        self.chaos["redis:kill"] += 1
        self.redis.start()
        return "redis:kill (up again)"

    def _proxy(self) -> str:
        which = self.random.choice(["amqp", "redis"])
        proxy = self.amqp_proxy if which == "amqp" else self.redis_proxy
        assert proxy is not None
        fault = self.random.choice(["cut", "reset", "blackhole", "delay", "blackhole-up"])
        self.chaos[f"proxy:{which}:{fault}"] += 1
        if fault == "cut":
            proxy.cut()
            proxy.enable()
        elif fault == "reset":
            proxy.reset()
            proxy.enable()
        elif fault == "blackhole":
            proxy.blackhole()  # until the next chaos step heals it
        elif fault == "blackhole-up":
            proxy.blackhole(Direction.UP)
        else:
            proxy.delay(self.random.uniform(0.05, 0.3))
        return f"proxy:{which}:{fault}"

    # -- the end ------------------------------------------------------------------------------------------------------
    def recover(self) -> None:
        """Heal the proxies, bring up whatever is down, wait until every service is ready."""
        self.heal_proxies()
        if not self.redis.ping():
            self.redis.start()
        try:
            if self.rabbit.proc is None or self.rabbit.proc.poll() is not None:
                self.rabbit.start()
            self.rabbit.elect()
        except AssertionError:  # a node that did not come up whole after the last chaos step: once more
            self.rabbit.restart(crash=True)
        for service in self.services.values():
            if not service.alive():
                service.start()
        self._wait(lambda: all(s.ready() for s in self.services.values()), 300, "every service ready again")

    async def ready_messages(self) -> int:
        topology = Topology(self.namespace)
        connection = await aio_pika.connect(self.rabbit.url, timeout=10)
        total = 0
        async with connection:
            for name in [topology.incoming, *(topology.delay_queue(d) for d in DELAYS)]:
                channel = await connection.channel()
                with contextlib.suppress(aio_pika.exceptions.ChannelClosed):
                    declared = await channel.declare_queue(name, passive=True)
                    total += int(declared.declaration_result.message_count or 0)
        return total

    async def dead_letters(self) -> int:
        connection = await aio_pika.connect(self.rabbit.url, timeout=10)
        async with connection:
            channel = await connection.channel()
            declared = await channel.declare_queue(Topology(self.namespace).dead, passive=True)
            return int(declared.declaration_result.message_count or 0)

    def drain(self, timeout: float) -> None:
        """Wait until the queues are empty and the delivery idle twice in a row with nothing handled between."""
        delivery = self.services["delivery"]
        previous: tuple[float, ...] | None = None
        deadline = time.monotonic() + timeout
        while True:
            observed = (
                asyncio.run(self.ready_messages()),
                delivery.metric("postroom_delivery_in_flight_messages"),
                delivery.metric("postroom_delivery_messages_total"),
            )
            if observed[0] == 0 and observed[1] == 0 and observed == previous:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"the stack did not drain in {timeout}s (ready, in flight, handled: {observed})")
            previous = observed
            time.sleep(2)

    async def scan(self) -> None:
        store = Store.connect(self.redis.url, self.namespace)
        try:
            await self.ledger.scan_store(store, USERS)
        finally:
            await store.close()
        self.ledger.scan_mx(self.sink)

    async def run_phase(self) -> None:
        tasks = [asyncio.create_task(self.traffic()), asyncio.create_task(self.pop3())]
        if not self.args.no_chaos:
            tasks.append(asyncio.create_task(self.chaos_loop()))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), self.args.minutes * 60)
        self.stopping.set()
        await asyncio.gather(*tasks)
        if self.in_flight:
            await asyncio.wait(self.in_flight, timeout=60)


def summary(report: Report, soak: Soak, seconds: float, dead: int) -> dict[str, Any]:
    return {
        "namespace": soak.namespace,
        "minutes": soak.args.minutes,
        "seconds": round(seconds),
        "seed": soak.args.seed,
        "redis_appendfsync": soak.args.appendfsync,
        "messages": {"sent": report.sent, "accepted": report.accepted, "kinds": dict(soak.kinds)},
        "recipients": {
            "accepted": report.pairs,
            "delivered": report.delivered,
            "bounced": report.bounced,
            "lost": report.lost,
            "duplicated": report.duplicated,
            "unconfirmed": report.unconfirmed,
        },
        "dead_letters": dead,
        "pop3_sessions": dict(soak.pop3_sessions),
        "chaos": {k: v for k, v in sorted(soak.chaos.items()) if v},
        "problems": report.problems[:100],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="how long traffic and chaos run")
    parser.add_argument("--rate", type=float, default=4.0, help="messages per second offered to the ingress")
    parser.add_argument("--concurrency", type=int, default=8, help="SMTP sessions at most at once")
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between two faults")
    parser.add_argument("--seed", type=int, default=None, help="for the traffic mix and the choice of faults")
    parser.add_argument("--appendfsync", choices=["always", "everysec"], default="always")
    parser.add_argument("--drain-minutes", type=float, default=10.0, help="how long the queues may take to empty")
    parser.add_argument("--no-chaos", action="store_true", help="traffic only (a baseline)")
    parser.add_argument("--log-level", default="info", help="of the services (info: every attempt, by queue id)")
    args = parser.parse_args(argv)
    if args.seed is None:
        args.seed = random.randrange(1 << 30)
    reason = unavailable_reason()
    if reason is not None:
        print(f"bench.soak runs a RabbitMQ node of its own: {reason}")
        return 2
    base = Path(tempfile.mkdtemp(prefix="postroom-soak-"))
    soak = Soak(args, base)
    started = time.monotonic()
    try:
        soak.start()
        print(f"soak {soak.namespace}: {args.minutes} min, seed {args.seed}, logs in {soak.log_dir}", flush=True)
        asyncio.run(soak.run_phase())
        print(f"traffic stopped after {time.monotonic() - started:.0f}s; recovering and draining", flush=True)
        soak.recover()
        soak.drain(args.drain_minutes * 60)
        asyncio.run(soak.scan())
        report = soak.ledger.report()
        result = summary(report, soak, time.monotonic() - started, asyncio.run(soak.dead_letters()))
    finally:
        soak.stop()
        shutil.rmtree(base, ignore_errors=True)
    (RESULTS / f"soak-{soak.namespace}.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(report.line())
    return 1 if report.lost or report.duplicated else 0


if __name__ == "__main__":
    sys.exit(main())
