"""CPU cost of one password check at Postroom's argon2id cost: argon2-cffi's against the store's (libsodium).

Prints the best of several rounds of CPU time per check (process_time: this thread, the checks run inline). The
libsodium check is `services.store.passwords._matches`, what a POP3, SMTP AUTH or store API login runs on the
argon2 pool.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

from services.store import passwords
from services.store.passwords import Argon2Settings

ROUNDS = 3


def measure(check: Callable[[], bool], count: int) -> float:
    runs = []
    for _ in range(ROUNDS):
        started = time.process_time()
        for _ in range(count):
            assert check()
        runs.append((time.process_time() - started) / count * 1e3)
    return min(runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checks", type=int, default=10, help="checks per round")
    args = parser.parse_args()
    settings = Argon2Settings()
    passwords.configure(settings)
    stored = passwords.hash_password("bench-password")
    hasher = passwords._hasher
    print(
        f"argon2id m={settings.argon2_memory_kib} KiB, t={settings.argon2_time_cost}, p={settings.argon2_parallelism}"
    )
    cffi = measure(lambda: hasher.verify(stored, "bench-password"), args.checks)
    sodium = measure(lambda: passwords._matches(stored, "bench-password"), args.checks)
    print(f"argon2-cffi: {cffi:.1f} ms CPU per check")
    print(f"libsodium (the store's check): {sodium:.1f} ms CPU per check")


if __name__ == "__main__":
    main()
