"""Import and export speed: `postroom import maildir` of a generated maildir, then `postroom export` as a maildir
and as an mbox, each run as the real command in a fresh namespace of the shared Redis (removed afterwards).

.venv/bin/python -m bench.migrate --messages 5000 --size 10240
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parents[1]
POSTROOM = str(ROOT / ".venv" / "bin" / "postroom")
REDIS_URL = os.environ.get("POSTROOM_REDIS_URL", "redis://127.0.0.1:6379/0")


def body(n: int, size: int) -> bytes:
    head = f"From: bench@example.org\nTo: reader@bench.test\nSubject: message {n}\nMessage-ID: <{n}@bench>\n\n"
    line = b"abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ\n"
    return head.encode() + line * max(1, (size - len(head)) // len(line))


def make_maildir(root: Path, messages: int, size: int) -> None:
    for sub in ("cur", "new", "tmp"):
        (root / sub).mkdir(parents=True)
    lines = [f"3 V1700000000 N{messages + 1} G{uuid.uuid4().hex}"]
    for n in range(1, messages + 1):
        data = body(n, size)
        virtual = len(data) + data.count(b"\n")  # every line end becomes CRLF
        name = f"1700000000.M{n}P1.bench,S={len(data)},W={virtual}"
        (root / "cur" / f"{name}:2,S").write_bytes(data)
        lines.append(f"{n} :{name}")
    (root / "dovecot-uidlist").write_text("\n".join(lines) + "\n")


def timed(args: list[str], env: dict[str, str]) -> tuple[float, str]:
    started = time.monotonic()
    done = subprocess.run([POSTROOM, *args], env=env, capture_output=True, text=True, check=False)
    elapsed = time.monotonic() - started
    if done.returncode != 0:
        sys.exit(f"postroom {' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}")
    return elapsed, done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--size", type=int, default=10240)
    args = parser.parse_args()
    namespace = f"bench{uuid.uuid4().hex[:10]}"
    env = {**os.environ, "POSTROOM_NAMESPACE": namespace, "POSTROOM_REDIS_URL": REDIS_URL}
    user = "reader@bench.test"
    results: dict[str, object] = {"messages": args.messages, "size": args.size}
    try:
        with tempfile.TemporaryDirectory(prefix="postroom-bench-migrate-") as tmp:
            source = Path(tmp) / "source"
            make_maildir(source, args.messages, args.size)
            subprocess.run([POSTROOM, "domain", "add", "bench.test"], env=env, check=True, capture_output=True)
            subprocess.run(
                [POSTROOM, "user", "add", user, "--password-stdin"], env=env, input="bench-password\n", text=True,
                capture_output=True, check=True,
            )  # fmt: skip
            for label, command in (
                ("import_maildir", ["import", "maildir", str(source), "--user", user, "--json"]),
                ("import_again", ["import", "maildir", str(source), "--user", user, "--json"]),
                ("export_maildir", ["export", user, "--format", "maildir", str(Path(tmp) / "out")]),
                ("export_mbox", ["export", user, "--format", "mbox", str(Path(tmp) / "out.mbox")]),
            ):
                elapsed, output = timed(command, env)
                results[label] = {"seconds": round(elapsed, 2), "msg_per_s": round(args.messages / elapsed)}
                if label.startswith("import"):
                    report = json.loads(output)
                    assert report["stored"] + report["duplicate"] == args.messages and not report["skipped"], report
    finally:
        client = redis.Redis.from_url(REDIS_URL)
        keys = list(client.scan_iter(match=f"{namespace}:*", count=1000))
        for start in range(0, len(keys), 500):
            client.delete(*keys[start : start + 500])
        client.close()
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
