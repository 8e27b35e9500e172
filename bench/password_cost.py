"""CPU cost of one password check at Postroom's argon2id cost: argon2-cffi's against the store's (libsodium).

Prints the best of several rounds of CPU time per check (process_time: this thread, the checks run inline). The
libsodium check is `services.store.passwords._matches`, what a POP3, SMTP AUTH or store API login runs on the
argon2 pool.
"""

from __future__ import annotations

import argparse

from bench.cputime import best_per_call_us
from services.store import passwords
from services.store.passwords import Argon2Settings

ROUNDS = 3


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
    cffi = best_per_call_us(lambda: hasher.verify(stored, "bench-password"), args.checks, ROUNDS) / 1000
    sodium = best_per_call_us(lambda: passwords._matches(stored, "bench-password"), args.checks, ROUNDS) / 1000
    assert passwords._matches(stored, "bench-password") and not passwords._matches(stored, "wrong")
    print(f"argon2-cffi: {cffi:.1f} ms CPU per check")
    print(f"libsodium (the store's check): {sodium:.1f} ms CPU per check")


if __name__ == "__main__":
    main()
