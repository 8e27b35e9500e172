"""Drive the whole stack and report throughput, latency, CPU per message and peak memory per service.

.venv/bin/python -m bench.run smtp --messages 5000 --sessions 20 --size 1024
.venv/bin/python -m bench.run pop3 --sessions 20 --messages 200 --size 10240
.venv/bin/python -m bench.run idle --connections 1000
.venv/bin/python -m bench.run big --size-mib 25
.venv/bin/python -m bench.run big --size-mib 25 --defer
.venv/bin/python -m bench.run burst --messages 70 --size-mib 25
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import shutil
import smtplib
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import redis

from bench.brokers import SHARED_AMQP_URL, SHARED_REDIS_URL, Brokers, brokers
from bench.pop3load import download
from bench.stack import SERVICES, Stack, tree_rss_bytes
from services.store import Store
from shared.connections import connect_amqp_once
from shared.topology import Topology
from tests.delivery.dnsserver import DNSServer, Zone

REDIS_URL = SHARED_REDIS_URL
AMQP_URL = SHARED_AMQP_URL
RESULTS = Path(__file__).resolve().parent / "results"
DOMAIN = "bench.test"


def mib(value: float) -> str:
    return f"{value / 2**20:.1f} MiB"


async def prepare_users(namespace: str, users: list[str], url: str = REDIS_URL) -> None:
    store = Store.connect(url, namespace)
    await store.accounts.add_domain(DOMAIN)
    for user in users:
        await store.accounts.add_user(user, "bench-password")
    await store.close()


async def count_messages(namespace: str, user: str, url: str = REDIS_URL) -> int:
    store = Store.connect(url, namespace)
    try:
        return len(await store.mailboxes.snapshot(user))
    finally:
        await store.close()


def cleanup(namespace: str, servers: Brokers | None = None) -> None:
    """Remove the run's Redis keys, and its queues when they are on the shared broker (a private node is stopped
    with everything on it)."""
    servers = servers or Brokers()
    client = redis.Redis.from_url(servers.redis_url)
    keys = list(client.scan_iter(match=f"{namespace}:*", count=5000))
    for start in range(0, len(keys), 1000):
        client.delete(*keys[start : start + 1000])
    client.close()
    if "rabbitmq" in servers.private:
        return
    subprocess.run(
        [sys.executable, "-c", f"from tests.conftest import _cleanup_amqp; _cleanup_amqp({namespace!r})"],
        cwd=Path(__file__).resolve().parent.parent,
        check=False,
    )


def metric_lines(stack: Stack, service: str, port_offset: int = 0) -> list[str]:
    """The lines of a service's /metrics page."""
    url = f"http://127.0.0.1:{stack.metrics_ports[service] + port_offset}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        return list(response.read().decode().splitlines())


def metric_total(stack: Stack, service: str, name: str, port_offset: int = 0) -> float:
    """Sum of every series of one counter on a service's /metrics page."""
    total = 0.0
    for line in metric_lines(stack, service, port_offset):
        if line.startswith(name) and line[len(name) : len(name) + 1] in ("{", " "):
            total += float(line.rsplit(" ", 1)[1])
    return total


def start_profiling(stack: Stack, args: argparse.Namespace, namespace: str) -> None:
    for name in args.profile:
        stack.profile(name, RESULTS / namespace / f"profile-{name}.txt", args.profile_rate)


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


async def mailbox_uids(namespace: str, user: str, url: str = REDIS_URL) -> list[str]:
    store = Store.connect(url, namespace)
    try:
        return [info.uid for info in await store.mailboxes.snapshot(user)]
    finally:
        await store.close()


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def queue_id_time(queue_id: str) -> float:
    """The creation time a queue id carries (its first 10 characters: milliseconds, Crockford base32)."""
    millis = 0
    for char in queue_id[:10]:
        millis = millis * 32 + "0123456789ABCDEFGHJKMNPQRSTVWXYZ".index(char)
    return millis / 1000


async def latencies(namespace: str, user: str, url: str = REDIS_URL) -> list[float]:
    """End of DATA → in the mailbox, per message: the queue id is made at the final dot, 'stored' is traced."""
    store = Store.connect(url, namespace)
    try:
        out = []
        for info in await store.mailboxes.snapshot(user):
            events = await store.trace.events(info.uid)
            stored = next((e["time"] for e in events if e["event"] == "stored"), None)
            if stored is not None:
                out.append(stored - queue_id_time(info.uid))
        return out
    finally:
        await store.close()


def smtp_source_command(sessions: int, size: int, messages: int, recipient: str, port: int) -> list[str]:
    """The load generator of the smtp scenario (bench.reference drives Postfix with the same command)."""
    command = ["smtp-source", "-s", str(sessions), "-l", str(size), "-m", str(messages), "-M", LOAD_HELO]
    return [*command, "-f", "load@remote.test", "-t", recipient, f"127.0.0.1:{port}"]


LOAD_HELO = "client.remote.test"


def inbound_checks(mode: str) -> tuple[dict[str, str], DNSServer | None]:
    """--checks on/off: loopback is not trusted (so port 25 checks apply) and a local DNS server publishes SPF and
    DMARC for the load's sender and HELO; `on` and `off` differ only in POSTROOM_INBOUND_CHECKS. `none`: as before
    (loopback trusted, nothing checked)."""
    if mode == "none":
        return {}, None
    zone = Zone()
    zone.add("remote.test", "TXT", '"v=spf1 ip4:127.0.0.0/8 -all"')
    zone.add(LOAD_HELO, "TXT", '"v=spf1 ip4:127.0.0.0/8 -all"')
    zone.add("_dmarc.remote.test", "TXT", '"v=DMARC1; p=reject"')
    server = DNSServer(zone).start()
    env = {
        "POSTROOM_TRUSTED_NETWORKS": "",
        "POSTROOM_DNS_NAMESERVERS": server.nameserver,
        "POSTROOM_INBOUND_CHECKS": "true" if mode == "on" else "false",
    }
    return env, server


def run_smtp(args: argparse.Namespace, servers: Brokers | None = None) -> dict[str, Any]:
    if not shutil.which("smtp-source"):
        sys.exit("smtp-source is missing: apt-get install --no-install-recommends postfix (it is not started)")
    if servers is None:
        with brokers(args.brokers or "shared", amqp=True) as own:
            return run_smtp(args, own)
    namespace = f"bench-{uuid.uuid4().hex[:8]}"
    user = f"sink@{DOMAIN}"
    url = servers.redis_url
    checks_env, dns_server = inbound_checks(args.checks)
    env = {**servers.env(), **checks_env, **args.env}
    replicas = {"delivery": args.delivery_replicas}
    stack = Stack(namespace, RESULTS / namespace, env, servers=servers.private, replicas=replicas)
    try:
        asyncio.run(prepare_users(namespace, [user], url))
        stack.start()
        start_profiling(stack, args, namespace)
        if args.checks == "on":
            # The first message fills the DNS caches, as on a server that has seen the sender before.
            with smtplib.SMTP("127.0.0.1", stack.port("POSTROOM_SMTP_LISTEN"), LOAD_HELO, timeout=30) as client:
                client.sendmail("load@remote.test", [user], b"From: load@remote.test\r\n\r\nwarm-up\r\n")
        load_before = load_average()
        calls_before = redis_calls(url) if "redis" in servers.private else None
        cpu_before = stack.cpu()
        started = time.monotonic()
        command = smtp_source_command(args.sessions, args.size, args.messages, user, stack.port("POSTROOM_SMTP_LISTEN"))
        subprocess.run(command, check=True, timeout=args.timeout)
        accepted_at = time.monotonic()
        deadline = accepted_at + args.timeout
        while asyncio.run(count_messages(namespace, user, url)) < args.messages:
            if time.monotonic() > deadline:
                raise RuntimeError("not every message reached the mailbox in time")
            time.sleep(0.05)
        stored_at = time.monotonic()
        cpu_after = stack.cpu()
        calls_after = redis_calls(url) if "redis" in servers.private else None
        stack.stop_profiling()
        # Nothing lost, nothing duplicated: every message smtp-source sent was answered 250 (counted by the
        # ingress), and the mailbox holds exactly that many distinct queue ids, also a moment later.
        # With POSTROOM_SMTP_WORKERS=N, worker i serves its own /metrics on the metrics port + i.
        workers = int(args.env.get("POSTROOM_SMTP_WORKERS", "1"))
        accepted = sum(
            metric_total(stack, "smtp_ingress", "postroom_smtp_messages_accepted_total", offset)
            for offset in range(workers)
        )
        # What each delivery process did (with --delivery-replicas N they share the queue).
        delivered_by = {
            name: int(metric_total(stack, name, "postroom_delivery_messages_total"))
            for name in stack.procs
            if name.startswith("delivery")
        }
        time.sleep(1)
        uids = asyncio.run(mailbox_uids(namespace, user, url))
        check: dict[str, Any] = {
            "accepted_250": int(accepted),
            "in_mailbox": len(uids),
            "distinct_queue_ids": len(set(uids)),
            "delivered_by": delivered_by,
        }
        expected = args.messages + (1 if args.checks == "on" else 0)
        if not (accepted == expected == len(uids) == len(set(uids))):
            raise RuntimeError(f"lost or duplicated messages: sent {expected}, {check}")
        if args.checks == "on":
            check["auth_results"] = {
                line.split(" ")[0]: float(line.rsplit(" ", 1)[1])
                for line in metric_lines(stack, "smtp_ingress")
                if line.startswith("postroom_smtp_auth_results_total{") and not line.endswith(" 0.0")
            }
        lat = asyncio.run(latencies(namespace, user, url))
        return {
            "scenario": "smtp",
            "messages": args.messages,
            "sessions": args.sessions,
            "size": args.size,
            "env": args.env,
            "delivery_replicas": args.delivery_replicas,
            "checks": args.checks,
            "loadavg_before": load_before,
            "loadavg_after": load_average(),
            "check": check,
            "accept_msg_per_s": round(args.messages / (accepted_at - started), 1),
            "end_to_end_msg_per_s": round(args.messages / (stored_at - started), 1),
            "latency_p50_ms": round(percentile(lat, 0.5) * 1000, 1) if lat else None,
            "latency_p99_ms": round(percentile(lat, 0.99) * 1000, 1) if lat else None,
            **cpu_report(cpu_before, cpu_after, tuple(cpu_after), args.messages),
            "cpu_sources": servers.sources(),
            **calls_report(calls_before, calls_after, args.messages),
            "peak_rss": {name: mib(v) for name, v in stack.peak_rss().items()},
        }
    finally:
        stack.stop()
        cleanup(namespace, servers)
        if dns_server is not None:
            dns_server.stop()


READS = "(socket reads)"


def redis_calls(url: str) -> dict[str, int]:
    """Commands a Redis has run so far by name (INFO commandstats: a script's own calls counted as well), and under
    READS the reads it has done from its clients' sockets: about one per round trip, however many commands it held."""
    client = redis.Redis.from_url(url)
    stats = client.info("commandstats")
    calls = {name.removeprefix("cmdstat_"): int(entry["calls"]) for name, entry in stats.items()}
    calls[READS] = int(client.info("stats")["total_reads_processed"])
    return calls


def calls_report(before: dict[str, int] | None, after: dict[str, int] | None, messages: int) -> dict[str, Any]:
    """Redis commands per message on a private Redis (every service's, the bench's polling for the mailbox too):
    the total, by command those of at least 0.05 per message, and the socket reads (round trips) per message;
    nothing for a shared one."""
    if before is None or after is None:
        return {}
    per = {name: (n - before.get(name, 0)) / messages for name, n in after.items()}
    reads = per.pop(READS, 0.0)
    by_command = {name: round(v, 2) for name, v in sorted(per.items(), key=lambda kv: -kv[1]) if v >= 0.05}
    return {
        "redis_calls_per_msg": round(sum(per.values()), 2),
        "redis_reads_per_msg": round(reads, 2),
        "redis_calls_by_command": by_command,
    }


def pop3_body(size: int) -> bytes:
    """At most `size` octets (whole lines) of a message as POP3 sends it: CRLF lines, none starting with a dot."""
    return (b"Subject: bench\r\n\r\n" + (b"x" * 76 + b"\r\n") * (size // 78))[:size]


def cpu_report(
    before: dict[str, float], after: dict[str, float], names: tuple[str, ...], messages: int
) -> dict[str, Any]:
    """CPU ms per message of each of `names` and their sum, the server side of the run."""
    used = {name: (after[name] - before[name]) * 1000 / messages for name in names if name in after}
    return {
        "cpu_ms_per_msg": {name: round(ms, 3) for name, ms in used.items()},
        "server_cpu_ms_per_msg": round(sum(used.values()), 3),
    }


def run_pop3(args: argparse.Namespace, servers: Brokers | None = None) -> dict[str, Any]:
    if servers is None:
        with brokers(args.brokers or "private", amqp=False) as own:
            return run_pop3(args, own)
    namespace = f"bench-{uuid.uuid4().hex[:8]}"
    users = [f"reader{i}@{DOMAIN}" for i in range(args.sessions)]
    stack = Stack(namespace, RESULTS / namespace, {**servers.env(), **args.env}, servers=servers.private)
    body = pop3_body(args.size)

    async def fill() -> None:
        await prepare_users(namespace, users, servers.redis_url)
        store = Store.connect(servers.redis_url, namespace)
        for user in users:
            for start in range(0, args.messages, 500):
                numbers = range(start, min(args.messages, start + 500))
                await asyncio.gather(*(store.mailboxes.deliver(user, f"Q{n:08d}", body) for n in numbers))
        await store.close()

    try:
        asyncio.run(fill())
        stack.start(only=("pop3",))
        rss_idle = tree_rss_bytes(stack.procs["pop3"].pid)
        start_profiling(stack, args, namespace)
        load_before = load_average()
        cpu_before = stack.cpu()
        port = stack.port("POSTROOM_POP3_LISTEN")
        # Every message is checked to come back whole (its size in octets) by the load generator.
        loaded = download(port, users, args.messages, args.batch, len(body), args.clients)
        cpu_after = stack.cpu()
        stack.stop_profiling()
        # With POSTROOM_POP3_WORKERS=N, how the kernel spread the sessions (worker i: metrics port + i).
        by_worker = [
            int(metric_total(stack, "pop3", "postroom_pop3_connections_total", offset))
            for offset in range(stack.workers("pop3"))
        ]
        # Which argon2 library checked the logins (POSTROOM_ARGON2_CHECKER=auto measures the first few and picks).
        checks = {
            line.split('checker="', 1)[1].split('"', 1)[0]: int(float(line.rsplit(" ", 1)[1]))
            for offset in range(stack.workers("pop3"))
            for line in metric_lines(stack, "pop3", offset)
            if line.startswith("postroom_password_checks_total{")
        }
        total = args.messages * args.sessions
        if loaded.octets != total * len(body):
            raise RuntimeError(f"downloaded {loaded.octets} octets, expected {total * len(body)}")
        return {
            "scenario": "pop3",
            "sessions": args.sessions,
            "messages": total,
            "size": args.size,
            "env": args.env,
            "loadavg_before": load_before,
            "loadavg_after": load_average(),
            "rss_before": mib(rss_idle),
            "msg_per_s": round(total / loaded.seconds, 1),
            # pop3 and the Redis serving it; RabbitMQ plays no part in a download.
            **cpu_report(cpu_before, cpu_after, ("pop3", "redis"), total),
            "cpu_sources": servers.sources(("redis",)),
            **loaded.report(total),
            "peak_rss": mib(stack.peak_rss()["pop3"]),
            "sessions_by_worker": by_worker,
            "password_checks": checks,
        }
    finally:
        stack.stop()
        cleanup(namespace, servers)


def run_idle(args: argparse.Namespace) -> dict[str, Any]:
    namespace = f"bench-{uuid.uuid4().hex[:8]}"
    stack = Stack(namespace, RESULTS / namespace, extra_env=args.env)

    async def hold() -> int:
        port = stack.port("POSTROOM_SMTP_LISTEN")
        conns = []
        for _ in range(args.connections):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            greeting = await reader.readline()
            if not greeting.startswith(b"220"):
                raise RuntimeError(f"no greeting: {greeting!r}")
            conns.append(writer)
        rss = tree_rss_bytes(stack.procs["smtp_ingress"].pid)
        for writer in conns:
            writer.close()
        return rss

    try:
        stack.start(only=("smtp_ingress",))
        baseline = tree_rss_bytes(stack.procs["smtp_ingress"].pid)
        rss = asyncio.run(hold())
        return {
            "scenario": "idle",
            "env": args.env,
            "loadavg": load_average(),
            "connections": args.connections,
            "rss_before": mib(baseline),
            "rss_holding": mib(rss),
        }
    finally:
        stack.stop()
        cleanup(namespace)


# --defer: the big message goes to a remote domain whose next hop refuses connections, so the delivery republishes
# it into this delay queue (long enough that it does not come back during the run).
DEFER_DELAY = 3600


def big_message(size_mib: int, subject: str) -> bytes:
    """About `size_mib` MiB of 1000-octet lines under a one-field header."""
    line = b"y" * 998 + b"\r\n"
    return f"Subject: {subject}\r\n\r\n".encode() + line * (size_mib * 2**20 // len(line))


def run_big(args: argparse.Namespace) -> dict[str, Any]:
    import poplib

    namespace = f"bench-{uuid.uuid4().hex[:8]}"
    user = f"big@{DOMAIN}"
    size = args.size_mib * 2**20
    env = {"POSTROOM_MAX_MESSAGE_SIZE": str(size + 2**20), **args.env}
    services: tuple[str, ...] = SERVICES
    if args.defer:
        # Nothing listens on port 9 (discard) here: the relay connection is refused, a temporary failure.
        env |= {"POSTROOM_TRANSPORT_MAP": "remote.example=[127.0.0.1]:9", "POSTROOM_RETRY_SCHEDULE": f"{DEFER_DELAY}s"}
        user, services = "x@remote.example", ("smtp_ingress", "delivery")
    stack = Stack(namespace, RESULTS / namespace, extra_env=env)
    message = big_message(args.size_mib, "big")
    result: dict[str, Any] = {}
    try:
        asyncio.run(prepare_users(namespace, [] if args.defer else [user]))
        stack.start(only=services)
        start_profiling(stack, args, namespace)
        before = {name: tree_rss_bytes(proc.pid) for name, proc in stack.procs.items()}
        with smtplib.SMTP("127.0.0.1", stack.port("POSTROOM_SMTP_LISTEN"), timeout=300) as smtp:
            smtp.sendmail("load@remote.test", [user], message)
        deadline = time.monotonic() + args.timeout
        if args.defer:
            deferred = 'postroom_delivery_messages_total{result="deferred"}'
            while metric_value(stack, "delivery", deferred) < 1:
                if time.monotonic() > deadline:
                    raise RuntimeError("the big message was not deferred")
                time.sleep(0.1)
            result["deferred"] = metric_value(stack, "delivery", deferred)
            result["delay_queue_depth"] = asyncio.run(queue_depth(Topology(namespace).delay_queue(DEFER_DELAY)))
        else:
            while asyncio.run(count_messages(namespace, user)) < 1:
                if time.monotonic() > deadline:
                    raise RuntimeError("the big message did not arrive")
                time.sleep(0.1)
            pop = poplib.POP3("127.0.0.1", stack.port("POSTROOM_POP3_LISTEN"), timeout=300)
            pop.user(user)
            pop.pass_("bench-password")
            _, lines, octets = pop.retr(1)
            pop.quit()
            if not b"\r\n".join(lines).endswith(message.rstrip(b"\r\n")):
                raise RuntimeError("the retrieved message differs from the one sent")
            result["retrieved_octets"] = octets
        stack.stop_profiling()
        peak = stack.peak_rss()
        limit = 4 * len(message)
        return {
            "scenario": "big-defer" if args.defer else "big",
            "env": args.env,
            "loadavg": load_average(),
            "message_bytes": len(message),
            **result,
            "limit_4x": mib(limit),
            "rss_before": {name: mib(v) for name, v in before.items()},
            "peak_rss": {name: mib(v) for name, v in peak.items()},
            "peak_rss_over_message": {name: round(v / len(message), 2) for name, v in peak.items()},
            # Growth over the idle process, which alone is ~85-110 MiB of interpreter and libraries.
            "growth_over_message": {name: round((peak[name] - before[name]) / len(message), 2) for name in peak},
            "under_4x": {name: v < limit for name, v in peak.items()},
        }
    finally:
        stack.stop()
        cleanup(namespace)


def metric_value(stack: Stack, service: str, series: str) -> float:
    """One series of a service's /metrics page, named as it prints it (labels included); 0 when absent."""
    for line in metric_lines(stack, service):
        name, _, value = line.rpartition(" ")
        if name == series:
            return float(value)
    return 0.0


async def queue_depth(queue: str) -> int:
    """Ready messages in `queue` (a passive declare)."""
    connection = await connect_amqp_once(AMQP_URL, "postroom-bench", timeout=5)
    async with connection:
        channel = await connection.channel()
        declared = await channel.declare_queue(queue, passive=True)
        return int(declared.declaration_result.message_count or 0)


def run_burst(args: argparse.Namespace) -> dict[str, Any]:
    """`messages` big messages queued while the delivery is stopped (SIGSTOP), then let go at once: the broker
    pushes up to the prefetch of them to the delivery, so its peak memory shows how it holds waiting bodies."""
    import os
    import signal
    from concurrent.futures import ThreadPoolExecutor

    namespace = f"bench-{uuid.uuid4().hex[:8]}"
    users = [f"burst{i}@{DOMAIN}" for i in range(args.messages)]
    size = args.size_mib * 2**20
    env = {"POSTROOM_MAX_MESSAGE_SIZE": str(size + 2**20), **args.env}
    stack = Stack(namespace, RESULTS / namespace, extra_env=env)
    message = big_message(args.size_mib, "burst")

    def send(user: str) -> None:
        with smtplib.SMTP("127.0.0.1", stack.port("POSTROOM_SMTP_LISTEN"), timeout=300) as smtp:
            smtp.sendmail("load@remote.test", [user], message)

    def delivered() -> int:
        return sum(asyncio.run(count_messages(namespace, user)) for user in users)

    try:
        asyncio.run(prepare_users(namespace, users))
        stack.start(only=("smtp_ingress", "delivery"))
        before = {name: tree_rss_bytes(proc.pid) for name, proc in stack.procs.items()}
        delivery = stack.procs["delivery"].pid
        os.kill(delivery, signal.SIGSTOP)
        try:
            queued_at = time.monotonic()
            with ThreadPoolExecutor(4) as pool:
                list(pool.map(send, users))
            queued = time.monotonic() - queued_at
        finally:
            os.kill(delivery, signal.SIGCONT)
        started = time.monotonic()
        deadline = started + args.timeout
        count = delivered()
        while count < args.messages and time.monotonic() < deadline:
            time.sleep(0.5)
            count = delivered()
        drained = time.monotonic() - started
        spilled = metric_total(stack, "delivery", "postroom_delivery_spilled_messages_total")
        peak = stack.peak_rss()
        return {
            "scenario": "burst",
            "env": args.env,
            "loadavg": load_average(),
            "messages": args.messages,
            "message_bytes": len(message),
            "delivered": count,
            "queue_s": round(queued, 1),
            "drain_s": round(drained, 1),
            "spilled": int(spilled),
            "rss_before": {name: mib(v) for name, v in before.items()},
            "peak_rss": {name: mib(v) for name, v in peak.items()},
        }
    finally:
        stack.stop()
        cleanup(namespace)


def save_result(name: str, result: dict[str, Any]) -> None:
    """Keep the run's JSON in bench/results/<name>-<time>.json and print it."""
    RESULTS.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    (RESULTS / f"{name}-{stamp}.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", action="append", default=[], help="extra VAR=value for the services")
    parser.add_argument(
        "--brokers",
        choices=("shared", "private"),
        help="Redis and RabbitMQ: the shared servers, or private ones of this run alone, so that their CPU is "
        "Postroom's own (a private RabbitMQ node needs root). Default: private for pop3 (a redis-server), shared "
        "otherwise (smtp with private also starts a RabbitMQ node)",
    )
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument(
        "--profile", action="append", default=[], help="sample this service with py-spy during the run (repeatable)"
    )
    parser.add_argument("--profile-rate", type=int, default=100, help="py-spy samples per second")
    sub = parser.add_subparsers(dest="scenario", required=True)
    smtp = sub.add_parser("smtp", help="smtp-source → mailbox")
    smtp.add_argument("--messages", type=int, default=5000)
    smtp.add_argument("--sessions", type=int, default=20)
    smtp.add_argument("--size", type=int, default=1024)
    smtp.add_argument(
        "--checks",
        choices=("none", "on", "off"),
        default="none",
        help="on/off: port 25 inbound checks with a local DNS server, loopback untrusted (none: loopback trusted)",
    )
    smtp.add_argument(
        "--delivery-replicas", type=int, default=1, help="delivery processes (ingress workers: POSTROOM_SMTP_WORKERS)"
    )
    pop3 = sub.add_parser("pop3", help="pipelined POP3 download")
    pop3.add_argument("--sessions", type=int, default=20)
    pop3.add_argument("--messages", type=int, default=250, help="per session")
    pop3.add_argument("--size", type=int, default=10240)
    pop3.add_argument("--batch", type=int, default=50, help="RETR commands pipelined at once")
    pop3.add_argument("--clients", type=int, default=4, help="load generator processes sharing the sessions")
    idle = sub.add_parser("idle", help="ingress memory holding idle connections")
    idle.add_argument("--connections", type=int, default=1000)
    big = sub.add_parser("big", help="one big message through the whole path")
    big.add_argument("--size-mib", type=int, default=25)
    big.add_argument(
        "--defer", action="store_true", help="to a remote domain whose next hop refuses: deferred to a delay queue"
    )
    burst = sub.add_parser("burst", help="big messages queued while the delivery is stopped, then let go")
    burst.add_argument("--messages", type=int, default=70)
    burst.add_argument("--size-mib", type=int, default=25)
    return parser


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    args = build_parser().parse_args(argv)
    args.env = dict(item.split("=", 1) for item in args.env)
    return args


def raise_file_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))


def main() -> None:
    args = parse()
    raise_file_limit()
    runner = {"smtp": run_smtp, "pop3": run_pop3, "idle": run_idle, "big": run_big, "burst": run_burst}[args.scenario]
    result = runner(args)
    save_result(args.scenario, result)


if __name__ == "__main__":
    main()
