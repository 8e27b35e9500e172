"""Postroom and the reference (Postfix, Postfix → Dovecot LMTP, Dovecot) in alternating rounds, one table.

Each round runs, with the issue's loads: Postroom end to end (`bench.run smtp`), Postfix with virtual(8), Postfix →
Dovecot LMTP (`bench.reference postfix [--delivery lmtp]`), then for each POP3 mailbox size Postroom's POP3
(`bench.run pop3`) and Dovecot's (`bench.reference dovecot`, its second pass: index built). Even rounds run each
pair in the other order, so a machine that drifts in speed favours neither side, and a short unmeasured run of every
system comes before round 1 (`warm_up`). Before every run `bench.hostspeed` times two fixed pieces of Python work,
so a run on a host that had slowed shows as such. Postroom runs against a private
redis-server and RabbitMQ node started once for all rounds, so their CPU is Postroom's own. Run as root (Postfix,
Dovecot and the RabbitMQ node switch users).

    sudo .venv/bin/python -m bench.compare --rounds 3
    sudo .venv/bin/python -m bench.compare --rounds 1 --messages 200 --pop3-messages 10   # a quick try
"""

from __future__ import annotations

import argparse
import json
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from typing import Any

from bench import hostspeed, reference, run
from bench.brokers import Brokers, brokers
from bench.run import RESULTS, load_average


@dataclass
class Row:
    round: int
    scenario: str
    system: str
    msg_per_s: float | None = None
    cpu_ms_per_msg: float | None = None
    client_cpu_ms_per_msg: float | None = None
    loadavg: str = ""
    # bench.hostspeed's probe just before the run: CPU ms of its large-heap and its small work
    host_heap_ms: float | None = None
    host_small_ms: float | None = None
    error: str | None = None


Runner = Callable[[], dict[str, Any]]


def postroom_e2e(args: argparse.Namespace, servers: Brokers) -> dict[str, Any]:
    argv = ["smtp", "--messages", str(args.messages), "--sessions", str(args.sessions), "--size", "1024"]
    return run.run_smtp(run.parse(argv), servers)


def postfix(args: argparse.Namespace, delivery: str) -> dict[str, Any]:
    argv = ["postfix", "--messages", str(args.messages), "--sessions", str(args.sessions), "--delivery", delivery]
    return reference.run(reference.build_parser().parse_args(argv))


def pop3_argv(args: argparse.Namespace, per_user: int) -> list[str]:
    sizes = ["--sessions", str(args.users), "--messages", str(per_user), "--size", str(args.pop3_size)]
    return [*sizes, "--clients", str(args.clients)]


def postroom_pop3(args: argparse.Namespace, servers: Brokers, per_user: int) -> dict[str, Any]:
    return run.run_pop3(run.parse(["pop3", *pop3_argv(args, per_user)]), servers)


def dovecot(args: argparse.Namespace, per_user: int) -> dict[str, Any]:
    return reference.run(reference.build_parser().parse_args(["dovecot", *pop3_argv(args, per_user)]))


def figures(system: str, result: dict[str, Any]) -> tuple[float, float, float | None]:
    """msg/s, server CPU ms/msg and the load clients' CPU ms/msg of one run's result."""
    if system == "postroom-e2e":
        return result["end_to_end_msg_per_s"], result["server_cpu_ms_per_msg"], None
    if system.startswith("postfix"):
        return result["into_mailbox_msg_per_s"], result["cpu_ms_per_msg"], None
    if system == "postroom-pop3":
        return result["msg_per_s"], result["server_cpu_ms_per_msg"], result["client_cpu_ms_per_msg"]
    best = result["passes"][-1]  # Dovecot with its index built
    return best["msg_per_s"], best["cpu_ms_per_msg"], best["client_cpu_ms_per_msg"]


def measure(number: int, scenario: str, system: str, runner: Runner, results: list[dict[str, Any]]) -> Row:
    row = Row(number, scenario, system, loadavg=load_average())
    speed = hostspeed.probe_apart()
    row.host_heap_ms, row.host_small_ms = speed["heap_ms"], speed["small_ms"]
    try:
        result = runner()
        row.msg_per_s, row.cpu_ms_per_msg, row.client_cpu_ms_per_msg = figures(system, result)
        results.append({"round": number, "scenario": scenario, "system": system, "result": result})
    except Exception as error:  # one failed run must not lose the others: reported in the table and the exit status
        row.error = f"{type(error).__name__}: {error}"
        results.append({"round": number, "scenario": scenario, "system": system, "error": traceback.format_exc()})
    print(json.dumps(asdict(row)), flush=True)
    return row


def ratio(ours: float | None, theirs: float | None) -> str:
    return f"{ours / theirs:.2f}" if ours and theirs else "-"


def table(rows: list[Row]) -> str:
    """One line per run, with Postroom/reference ratios (msg/s and CPU ms/msg) on each reference's line."""
    lines = [
        "| round | scenario | system | msg/s | server CPU ms/msg | load clients CPU ms/msg | Postroom/this msg/s "
        "| Postroom/this CPU | host probe ms, heap / small |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        ours = next(
            (
                r
                for r in rows
                if r.round == row.round and r.scenario == row.scenario and r.system.startswith("postroom")
            ),
            None,
        )
        compared = ours is not None and ours is not row
        cells = [
            str(row.round),
            row.scenario,
            row.system,
            f"{row.msg_per_s:,.1f}" if row.msg_per_s else f"failed: {row.error}",
            f"{row.cpu_ms_per_msg:.3f}" if row.cpu_ms_per_msg is not None else "-",
            f"{row.client_cpu_ms_per_msg:.3f}" if row.client_cpu_ms_per_msg is not None else "-",
            ratio(ours.msg_per_s, row.msg_per_s) if compared and ours else "",
            ratio(ours.cpu_ms_per_msg, row.cpu_ms_per_msg) if compared and ours else "",
            f"{row.host_heap_ms} / {row.host_small_ms}" if row.host_heap_ms is not None else "-",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def warm_up(args: argparse.Namespace, servers: Brokers) -> None:
    """One short run of every system before round 1, none of it measured. Round 1 starts with Postroom, and the
    first run after a quiet spell is the slowest in every component: on 2026-12-04 round 1 had the lowest end-to-end
    ratio in all four runs without a warm-up, and in one of them every Postroom component, Redis and RabbitMQ
    included, spent 25-35% more CPU per message than in rounds 2 and 3."""
    pop3 = [20] if args.pop3_messages else []
    short = argparse.Namespace(**{**vars(args), "messages": min(args.messages, 1000), "pop3_messages": pop3})
    for scenario, systems in pairs_of(short, servers):
        for system, runner in systems:
            started = time.monotonic()
            try:
                runner()
                outcome = "done"
            except Exception as error:  # the measured rounds report what fails; a warm-up only says so
                outcome = f"failed: {type(error).__name__}: {error}"
            print(f"warm-up {scenario} {system}: {outcome} in {time.monotonic() - started:.1f} s", flush=True)


def pairs_of(args: argparse.Namespace, servers: Brokers) -> list[tuple[str, list[tuple[str, Runner]]]]:
    """Each scenario with its systems, Postroom first."""
    e2e = f"e2e {args.sessions}x1KiB {args.messages}"
    pairs: list[tuple[str, list[tuple[str, Runner]]]] = [
        (
            e2e,
            [
                ("postroom-e2e", lambda: postroom_e2e(args, servers)),
                ("postfix-virtual", lambda: postfix(args, "virtual")),
                ("postfix-lmtp", lambda: postfix(args, "lmtp")),
            ],
        )
    ]
    for per_user in args.pop3_messages:
        pairs.append(
            (
                f"pop3 {args.users}x{per_user}x{args.pop3_size // 1024}KiB",
                [
                    ("postroom-pop3", partial(postroom_pop3, args, servers, per_user)),
                    ("dovecot", partial(dovecot, args, per_user)),
                ],
            )
        )
    return pairs


def rounds(args: argparse.Namespace, servers: Brokers) -> tuple[list[Row], list[dict[str, Any]]]:
    rows: list[Row] = []
    results: list[dict[str, Any]] = []
    if args.warm_up:
        warm_up(args, servers)
    for number in range(1, args.rounds + 1):
        for scenario, systems in pairs_of(args, servers):
            # Even rounds: the references first, Postroom last.
            ordered = systems if number % 2 else systems[::-1]
            measured = [measure(number, scenario, system, runner, results) for system, runner in ordered]
            rows += sorted(measured, key=lambda r: not r.system.startswith("postroom"))
    return rows, results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--messages", type=int, default=5000, help="end to end: messages per run")
    parser.add_argument("--sessions", type=int, default=20, help="end to end: smtp-source sessions")
    parser.add_argument("--users", type=int, default=20, help="POP3: sessions, one mailbox each")
    parser.add_argument(
        "--pop3-messages",
        type=lambda text: [int(n) for n in text.split(",") if n.strip()],
        default=[100, 250],
        help="POP3: messages per mailbox, one scenario each (comma-separated; default 100,250; empty: no POP3)",
    )
    parser.add_argument("--pop3-size", type=int, default=10240)
    parser.add_argument("--clients", type=int, default=4, help="POP3 load generator processes")
    parser.add_argument(
        "--no-warm-up",
        dest="warm_up",
        action="store_false",
        help="start measuring at once, without a short unmeasured run of each system first",
    )
    args = parser.parse_args(argv)
    reference.require_root()
    run.raise_file_limit()
    started = time.strftime("%Y-%m-%dT%H:%M:%S")
    with brokers("private", amqp=True) as servers:
        rows, results = rounds(args, servers)
    print(table(rows))
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"compare-{time.strftime('%Y%m%dT%H%M%S')}.json"
    path.write_text(
        json.dumps(
            {
                "started": started,
                "args": vars(args),
                "cpu_sources": servers.sources(),
                "rows": [asdict(r) for r in rows],
                "runs": results,
            },
            indent=2,
        )
    )
    print(f"\nsaved {path}; Postroom's Redis and RabbitMQ: private servers of this run (their CPU is Postroom's own)")
    return 1 if any(r.error for r in rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())
