"""How Postroom's costs grow with the work: a big mailbox, message size, many accounts, a queue backlog.

Each part runs against a private redis-server (so its memory and command counts are Postroom's alone) and prints
a table row per size as JSON; docs/scaling.md holds the figures. Counts and bytes do not depend on what else the
machine does; the times do, so they are medians of several tries.

    .venv/bin/python -m bench.scaling mailbox --sizes 1000,10000,100000
    .venv/bin/python -m bench.scaling mailbox --reference dovecot      # root: the same against a private Dovecot
    .venv/bin/python -m bench.scaling memory --count 2000
    .venv/bin/python -m bench.scaling accounts --sizes 1000,100000
    .venv/bin/python -m bench.scaling backlog --messages 100000        # root: a private RabbitMQ node
    .venv/bin/python -m bench.scaling backlog --reference postfix      # root: the same in a private Postfix's queue
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import poplib
import shutil
import signal
import smtplib
import statistics
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import aio_pika

from bench.reference import (
    Meter,
    count_files,
    dovecot_config,
    ensure_dovecot,
    fill_maildir,
    maildir,
    password_entry,
    postconf,
    postfix_config,
    require_root,
    scratch,
    server,
    usage,
    wait_for_banner,
    wait_until_gone,
)
from bench.run import DOMAIN as BENCH_DOMAIN
from bench.run import smtp_source_command
from bench.stack import Stack, free_port, peak_rss_bytes, rss_bytes, tree_cpu_seconds, tree_pss_bytes
from services.store import Store, passwords
from shared.envelope import Envelope
from shared.queue_id import new_queue_id
from shared.topology import Topology
from tests.redis_private import PrivateRedis

PASSWORD = "scaling-password"
DOMAIN = "scale.test"
RESULTS = Path(__file__).resolve().parent / "results"


def message(size: int, index: int) -> bytes:
    head = f"From: <a@remote.test>\r\nTo: <u@{DOMAIN}>\r\nSubject: scaling {index}\r\nMessage-ID: <{index}@s>\r\n\r\n"
    line = b"The quick brown fox jumps over the lazy dog, again and again and again.\r\n"
    body = line * max(1, (size - len(head)) // len(line))
    return head.encode() + body


@contextmanager
def private_redis() -> Iterator[PrivateRedis]:
    directory = Path(tempfile.mkdtemp(prefix="postroom-scaling-"))
    redis = PrivateRedis(directory, config=("--save", "", "--appendonly", "no")).start()
    try:
        yield redis
    finally:
        redis.stop()
        shutil.rmtree(directory, ignore_errors=True)


def calls(redis: PrivateRedis) -> int:
    """Commands Redis has run so far (INFO commandstats), scripts' own calls included."""
    stats = redis.command("INFO", "commandstats")
    return sum(int(entry["calls"]) for name, entry in stats.items() if name.startswith("cmdstat_"))


def used_memory(redis: PrivateRedis) -> int:
    return int(redis.command("INFO", "memory")["used_memory"])


def cheap_hashing() -> None:
    """The accounts a bench makes need not cost 19 MiB of argon2 each to create."""
    passwords.configure(passwords.Argon2Settings(argon2_memory_kib=8, argon2_time_cost=1))


async def fill(store: Store, address: str, count: int, size: int, batch: int = 500) -> None:
    for start in range(0, count, batch):
        await asyncio.gather(
            *(
                store.mailboxes.deliver(address, new_queue_id(), message(size, i))
                for i in range(start, min(count, start + batch))
            )
        )


async def seed_mailboxes(
    url: str, namespace: str, addresses: list[str], count: int, size: int, create: bool = True
) -> None:
    """The domain and `addresses` (when `create`), then `count` messages of `size` bytes in each."""
    cheap_hashing()
    store = Store.connect(url, namespace)
    if create:
        await store.accounts.add_domain(DOMAIN)
        for address in addresses:
            await store.accounts.add_user(address, PASSWORD)
    for address in addresses:
        await fill(store, address, count, size)
    await store.close()


async def seed_accounts(url: str, namespace: str, count: int, aliases: bool) -> None:
    """`count` accounts user<i>@, or (`aliases`) as many aliases alias<i>@ → user<i>@, 500 at a time."""
    cheap_hashing()
    store = Store.connect(url, namespace)
    for start in range(0, count, 500):
        batch = range(start, min(count, start + 500))
        if aliases:
            await asyncio.gather(
                *(store.accounts.add_alias(f"alias{i}@{DOMAIN}", [f"user{i}@{DOMAIN}"]) for i in batch)
            )
        else:
            await asyncio.gather(*(store.accounts.add_user(f"user{i}@{DOMAIN}", PASSWORD) for i in batch))
    await store.close()


# -- one big mailbox over POP3 --------------------------------------------------------------------------------------
def pop3_session(port: int, address: str, before_quit: Callable[[], None] | None = None) -> dict[str, float]:
    """Login, STAT, UIDL, RETR of the last message, QUIT: the seconds each took (`before_quit` runs before QUIT,
    untimed: a per-session server process still lives then)."""
    seen: dict[str, float] = {}
    started = time.perf_counter()
    pop = poplib.POP3("127.0.0.1", port, timeout=600)
    pop.user(address)
    pop.pass_(PASSWORD)
    seen["login"] = time.perf_counter() - started
    mark = time.perf_counter()
    count, _ = pop.stat()
    seen["stat"] = time.perf_counter() - mark
    mark = time.perf_counter()
    pop.uidl()
    seen["uidl"] = time.perf_counter() - mark
    mark = time.perf_counter()
    pop.retr(count)
    seen["retr_last"] = time.perf_counter() - mark
    hook = 0.0
    if before_quit is not None:
        mark = time.perf_counter()
        before_quit()
        hook = time.perf_counter() - mark
    pop.quit()
    seen["total"] = time.perf_counter() - started - hook
    return seen


def mailbox(sizes: list[int], tries: int) -> list[dict[str, Any]]:
    rows = []
    for size in sizes:
        with private_redis() as redis:
            namespace = f"scale{uuid.uuid4().hex[:8]}"
            address = f"big@{DOMAIN}"

            asyncio.run(seed_mailboxes(redis.url, namespace, [address], size, 1024))
            stack = Stack(namespace, RESULTS / namespace, {"POSTROOM_REDIS_URL": redis.url})
            stack.start(only=("pop3",))
            try:
                port = stack.port("POSTROOM_POP3_LISTEN")
                timings, commands = [], []
                for _ in range(tries):
                    before = calls(redis)
                    timings.append(pop3_session(port, address))
                    commands.append(calls(redis) - before)
                rss = rss_bytes(stack.procs["pop3"].pid)
            finally:
                stack.stop()
            row = {
                "messages": size,
                "redis_commands_per_session": statistics.median(commands),
                **{f"{k}_s": round(statistics.median(t[k] for t in timings), 4) for k in timings[0]},
                "pop3_rss_mib": round(rss / 2**20, 1),
                "redis_used_mib": round(used_memory(redis) / 2**20, 1),
            }
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


def dovecot_rss(master: int, out: list[tuple[int, int]]) -> None:
    """Append the peak RSS of the session's pop3 process and the PSS of the whole Dovecot instance (shared pages
    counted once)."""
    session = [pid for pid, u in usage(master).items() if u.name == "pop3"]
    out.append((sum(peak_rss_bytes(pid) for pid in session), tree_pss_bytes(master)))


def mailbox_dovecot(sizes: list[int], tries: int) -> list[dict[str, Any]]:
    """The same sessions against a private Dovecot (bench/reference.py: passwd-file user, argon2id at Postroom's
    cost, maildir with its index) on a maildir of 1 KiB messages. Its first session builds the index (reported
    apart); the figures are medians of the `tries` after it. RSS: the session's pop3 process (VmHWM, read before
    QUIT) and the whole instance's PSS at that moment."""
    require_root()
    dovecot = ensure_dovecot()
    rows = []
    for size in sizes:
        with scratch(keep=False) as root:
            address = f"big@{DOMAIN}"
            fill_maildir(root, address, size, lambda n: message(1024, n))
            port = free_port()
            config = dovecot_config(root, [address], password_entry("argon2id", PASSWORD), pop3=port)
            with server("Dovecot", [dovecot, "-F", "-c", str(config)], root / "master.log") as proc:
                wait_for_banner(port, proc, root / "dovecot.log")
                wait_until_gone(proc.pid, {"pop3-login", "pop3"}, 10)
                rss: list[tuple[int, int]] = []
                measure_rss = partial(dovecot_rss, proc.pid, rss)
                first = pop3_session(port, address, measure_rss)
                timings = []
                for _ in range(tries):
                    wait_until_gone(proc.pid, {"pop3-login", "pop3"}, 10)
                    timings.append(pop3_session(port, address, measure_rss))
                box = maildir(root, address)
                index = sum(f.stat().st_size for f in box.iterdir() if f.is_file() and f.name.startswith("dovecot"))
            row = {
                "reference": "dovecot",
                "messages": size,
                "first_session_s (builds the index)": round(first["total"], 4),
                **{f"{k}_s": round(statistics.median(t[k] for t in timings), 4) for k in timings[0]},
                "pop3_peak_rss_mib": round(statistics.median(r[0] for r in rss[1:]) / 2**20, 1),
                "dovecot_pss_mib": round(statistics.median(r[1] for r in rss[1:]) / 2**20, 1),
                "index_and_uidlist_mib": round(index / 2**20, 2),
            }
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


# -- Redis memory per message ---------------------------------------------------------------------------------------
def memory(count: int) -> list[dict[str, Any]]:
    rows = []
    for size in (1024, 10 * 1024, 100 * 1024):
        with private_redis() as redis:
            namespace = f"scale{uuid.uuid4().hex[:8]}"
            users = [f"u{i}@{DOMAIN}" for i in range(10)]

            asyncio.run(seed_mailboxes(redis.url, namespace, users, 0, size))
            before = used_memory(redis)
            asyncio.run(seed_mailboxes(redis.url, namespace, users, count // len(users), size, create=False))
            after = used_memory(redis)
            keys = [k.decode() for k in redis.command("KEYS", f"{namespace}:*")]
            sample = {
                kind: next((k for k in keys if f":{kind}:" in k or k.endswith(f":{kind}")), None)
                for kind in ("msg", "dedup", "index", "sizes")
            }
            usage = {kind: redis.command("MEMORY", "USAGE", key) if key else None for kind, key in sample.items()}
            per_user = count // len(users)
            row = {
                "message_bytes": len(message(size, 0)),
                "messages": count,
                "redis_bytes_per_message": round((after - before) / count),
                "overhead_bytes_per_message": round((after - before) / count - len(message(size, 0))),
                "msg_key_bytes": usage["msg"],
                "dedup_key_bytes": usage["dedup"],
                "index_bytes_per_message": round((usage["index"] or 0) / per_user),
                "sizes_bytes_per_message": round((usage["sizes"] or 0) / per_user),
            }
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


# -- many accounts and aliases --------------------------------------------------------------------------------------
def rcpt_latency(port: int, recipients: list[str], tries: int) -> tuple[float, float]:
    """Median and 99th percentile seconds of one RCPT round trip."""
    seen = []
    with smtplib.SMTP("127.0.0.1", port, timeout=60) as smtp:
        smtp.ehlo("bench.remote.test")
        for index in range(tries):
            smtp.mail("a@remote.test")
            started = time.perf_counter()
            code, _ = smtp.rcpt(recipients[index % len(recipients)])
            seen.append(time.perf_counter() - started)
            assert code == 250, code
            smtp.rset()
    seen.sort()
    return statistics.median(seen), seen[int(len(seen) * 0.99) - 1]


def accounts(sizes: list[int], tries: int) -> list[dict[str, Any]]:
    rows = []
    for size in sizes:
        with private_redis() as redis:
            namespace = f"scale{uuid.uuid4().hex[:8]}"

            asyncio.run(seed_mailboxes(redis.url, namespace, [], 0, 0))
            base = used_memory(redis)
            asyncio.run(seed_accounts(redis.url, namespace, size, aliases=False))
            with_users = used_memory(redis)
            asyncio.run(seed_accounts(redis.url, namespace, size, aliases=True))
            with_aliases = used_memory(redis)
            stack = Stack(namespace, RESULTS / namespace, {"POSTROOM_REDIS_URL": redis.url})
            stack.start(only=("smtp_ingress",))
            try:
                port = stack.port("POSTROOM_SMTP_LISTEN")
                step = max(1, size // 997)
                users = [f"user{i}@{DOMAIN}" for i in range(0, size, step)]
                aliases = [f"alias{i}@{DOMAIN}" for i in range(0, size, step)]
                user_p50, user_p99 = rcpt_latency(port, users, tries)
                alias_p50, alias_p99 = rcpt_latency(port, aliases, tries)
            finally:
                stack.stop()
            row = {
                "accounts_and_aliases": size,
                "rcpt_user_p50_ms": round(user_p50 * 1000, 3),
                "rcpt_user_p99_ms": round(user_p99 * 1000, 3),
                "rcpt_alias_p50_ms": round(alias_p50 * 1000, 3),
                "rcpt_alias_p99_ms": round(alias_p99 * 1000, 3),
                "redis_bytes_per_account": round((with_users - base) / size),
                "redis_bytes_per_alias": round((with_aliases - with_users) / size),
            }
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


# -- a backlog ------------------------------------------------------------------------------------------------------
def backlog(count: int, users: int) -> dict[str, Any]:
    from tests.rabbitmq_node import RabbitMQNode, unavailable_reason

    reason = unavailable_reason()
    if reason:
        raise SystemExit(f"backlog needs a private RabbitMQ node: {reason}")
    node = RabbitMQNode().start()
    namespace = f"scale{uuid.uuid4().hex[:8]}"
    addresses = [f"u{i}@{DOMAIN}" for i in range(users)]
    try:
        with private_redis() as redis:
            env = {"POSTROOM_REDIS_URL": redis.url, "POSTROOM_AMQP_URL": node.url}
            stack = Stack(namespace, RESULTS / namespace, env)
            stack.start(only=("smtp_ingress",))  # declares the topology; the delivery is not running yet

            async def seed() -> int:
                cheap_hashing()
                store = Store.connect(redis.url, namespace)
                await store.accounts.add_domain(DOMAIN)
                for address in addresses:
                    await store.accounts.add_user(address, PASSWORD)
                await store.close()
                connection = await aio_pika.connect(node.url)
                async with connection:
                    channel = await connection.channel(publisher_confirms=True)
                    exchange = await channel.get_exchange(Topology(namespace).exchange)
                    for start in range(0, count, 1000):
                        sends = []
                        for i in range(start, min(count, start + 1000)):
                            envelope = Envelope(new_queue_id(), "a@remote.test", (addresses[i % users],))
                            body = message(1024, i)
                            sends.append(
                                exchange.publish(
                                    aio_pika.Message(
                                        body,
                                        headers=envelope.to_headers(),
                                        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                                        message_id=envelope.queue_id,
                                    ),
                                    routing_key=Topology(namespace).incoming,
                                    mandatory=True,
                                )
                            )
                        await asyncio.gather(*sends)
                    # The queue's own count, from a passive declare: rabbitmqctl's counts are statistics emitted
                    # every few seconds and lag a quorum queue that has just taken a burst.
                    queue = await channel.declare_queue(Topology(namespace).incoming, passive=True)
                    depth = queue.declaration_result.message_count
                    return 0 if depth is None else depth

            started = time.monotonic()
            queued = asyncio.run(seed())
            queued_s = time.monotonic() - started
            broker = {
                "queued": queued,
                "broker_rss_mib": round(_node_rss(node) / 2**20),
                "broker_disk_mib": _du_mib(node.directory),
            }
            print(json.dumps({"backlog": broker, "queue_seconds": round(queued_s, 1)}), flush=True)

            probe: list[float] = []
            commands_before = calls(redis)
            assert node.proc is not None and redis.proc is not None
            servers = {
                "rabbitmq": node.proc.pid,
                "redis": redis.proc.pid,
                "smtp_ingress": stack.procs["smtp_ingress"].pid,
            }
            cpu_before = {name: tree_cpu_seconds(pid) for name, pid in servers.items()}
            delivery = Stack(namespace, RESULTS / namespace, env)
            drain_started = time.monotonic()
            delivery.start(only=("delivery",))
            port = stack.port("POSTROOM_SMTP_LISTEN")
            depths: list[tuple[float, int]] = []  # seconds into the drain, messages stored by then
            deadline = drain_started + 3600
            while time.monotonic() < deadline:
                stored = asyncio.run(_stored(redis.url, namespace, addresses))
                depths.append((time.monotonic() - drain_started, stored))
                if stored >= count + len(probe):
                    break
                probe.append(_submit_seconds(port, addresses[0]))
                time.sleep(2)  # a look every 2 s: reading 100 mailboxes costs Redis and this process work too
            drain_s = time.monotonic() - drain_started
            # The drain's CPU: the delivery's (from its start), the broker's, Redis's (which also answers the looks
            # at the mailboxes above) and the ingress's for the submits.
            drain_cpu = {name: tree_cpu_seconds(pid) - cpu_before[name] for name, pid in servers.items()}
            drain_cpu["delivery"] = tree_cpu_seconds(delivery.procs["delivery"].pid)
            delivery.stop()
            stack.stop()
            result = {
                "messages": count,
                **broker,
                "drain_seconds": round(drain_s, 1),
                "drain_messages_per_s": round(count / drain_s),
                "drain_cpu_ms_per_msg": round(sum(drain_cpu.values()) * 1000 / (count + len(probe)), 3),
                "drain_cpu_ms_per_msg_by_server": {
                    name: round(seconds * 1000 / (count + len(probe)), 3) for name, seconds in drain_cpu.items()
                },
                "ingress_submit_p50_ms_during_drain": round(statistics.median(probe) * 1000, 1),
                "ingress_submit_max_ms_during_drain": round(max(probe) * 1000, 1),
                "redis_used_mib_after": round(used_memory(redis) / 2**20),
                "redis_commands_per_message": round((calls(redis) - commands_before) / count, 1),
            }
            print(json.dumps(result), flush=True)
            return result
    finally:
        node.stop()


async def _stored(url: str, namespace: str, addresses: list[str]) -> int:
    """Messages in the mailboxes now (rabbitmqctl would start an Erlang VM per look, on the cores being measured)."""
    store = Store.connect(url, namespace)
    try:
        return sum([len(await store.mailboxes.snapshot(address)) for address in addresses])
    finally:
        await store.close()


def backlog_postfix(count: int) -> dict[str, Any]:
    """The backlog against a private Postfix (bench/reference.py, virtual(8) delivery): `count` messages of 1 KiB
    sent by smtp-source (20 sessions) while `defer_transports = virtual` keeps them in the deferred queue (Postfix's
    way of stopping a delivery transport), then the transport let go (main.cf rewritten, SIGHUP, `postqueue -f`)
    and drained into the maildir while an SMTP client submits one more message every 2 s."""
    require_root()
    address = f"sink@{BENCH_DOMAIN}"
    with scratch(keep=False) as root:
        port = free_port()
        conf = postfix_config(root, port, [address], maillog=True, transport=None)
        main_cf = conf / "main.cf"
        main_cf.write_text(main_cf.read_text() + "defer_transports = virtual\n")
        master = [str(Path(postconf("daemon_directory")) / "master"), "-c", str(conf)]
        with server("Postfix", master, root / "master.log") as proc:
            wait_for_banner(port, proc, root / "master.log")
            deferred = root / "queue" / "deferred"
            started = time.monotonic()
            subprocess.run(smtp_source_command(20, 1024, count, address, port), check=True, timeout=3600)
            deadline = time.monotonic() + 600
            while _files(deferred) < count and time.monotonic() < deadline:
                time.sleep(0.5)
            queued_s = time.monotonic() - started
            queue = {
                "queued": _files(deferred),
                # Shared pages once (PSS): a sum of RSS would count the libraries of every smtpd again.
                "postfix_pss_mib": round(tree_pss_bytes(proc.pid) / 2**20),
                "queue_disk_mib": _du_mib(root / "queue"),
            }
            print(json.dumps({"backlog": queue, "queue_seconds": round(queued_s, 1)}), flush=True)
            boxes = [maildir(root, address) / sub for sub in ("new", "cur")]
            meter = Meter({"postfix": proc.pid})
            meter.start()
            drain_started = time.monotonic()
            main_cf.write_text(main_cf.read_text().replace("defer_transports = virtual\n", ""))
            proc.send_signal(signal.SIGHUP)
            # The deferred messages wait for their next retry time; flushing asks qmgr to try them all now.
            subprocess.run(["postqueue", "-c", str(conf), "-f"], check=True, timeout=60)
            probe: list[float] = []
            deadline = drain_started + 3600
            while (stored := count_files(boxes)) < count + len(probe) and time.monotonic() < deadline:
                probe.append(_submit_seconds(port, address))
                time.sleep(2)
            drain_s = time.monotonic() - drain_started
            meter.stop()
            if stored != count + len(probe):
                raise RuntimeError(f"{stored} messages in the maildir, expected {count + len(probe)}")
            result = {
                "reference": "postfix",
                "messages": count,
                **queue,
                "drain_seconds": round(drain_s, 1),
                "drain_messages_per_s": round(count / drain_s),
                "smtpd_submit_p50_ms_during_drain": round(statistics.median(probe) * 1000, 1) if probe else None,
                "smtpd_submit_max_ms_during_drain": round(max(probe) * 1000, 1) if probe else None,
                "drain_cpu_ms_per_msg": meter.report(count + len(probe))["cpu_ms_per_msg"],
            }
            print(json.dumps(result), flush=True)
            return result


def _files(directory: Path) -> int:
    """Files under `directory`, its hashed subdirectories included (Postfix's deferred queue)."""
    return sum(1 for f in directory.rglob("*") if f.is_file())


def _submit_seconds(port: int, address: str) -> float:
    started = time.perf_counter()
    with smtplib.SMTP("127.0.0.1", port, timeout=120) as smtp:
        smtp.sendmail("probe@remote.test", [address], message(1024, -1))
    return time.perf_counter() - started


def _node_rss(node: Any) -> int:
    from tests.rabbitmq_node import _process_tree

    assert node.proc is not None
    return sum(rss_bytes(pid) for pid in _process_tree(node.proc.pid) if os.path.exists(f"/proc/{pid}"))


def _du_mib(path: Path) -> int:
    return round(sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scaling", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="part", required=True)
    part = sub.add_parser("mailbox")
    part.add_argument("--sizes", default="1000,10000,100000")
    part.add_argument("--tries", type=int, default=3)
    part.add_argument(
        "--reference", choices=("dovecot",), help="the same sessions against a private Dovecot (root) instead"
    )
    part = sub.add_parser("memory")
    part.add_argument("--count", type=int, default=2000)
    part = sub.add_parser("accounts")
    part.add_argument("--sizes", default="1000,100000")
    part.add_argument("--tries", type=int, default=2000)
    part = sub.add_parser("backlog")
    part.add_argument("--messages", type=int, default=100_000)
    part.add_argument("--users", type=int, default=100)
    part.add_argument(
        "--reference", choices=("postfix",), help="the same backlog in a private Postfix's queue (root) instead"
    )
    args = parser.parse_args(argv)
    run: dict[str, Callable[[], Any]] = {
        "mailbox": lambda: (mailbox_dovecot if args.reference else mailbox)(
            [int(s) for s in args.sizes.split(",")], args.tries
        ),
        "memory": lambda: memory(args.count),
        "accounts": lambda: accounts([int(s) for s in args.sizes.split(",")], args.tries),
        "backlog": lambda: backlog_postfix(args.messages) if args.reference else backlog(args.messages, args.users),
    }
    run[args.part]()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
