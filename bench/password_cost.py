"""CPU cost of one password check at Postroom's argon2id cost: argon2-cffi's against the store's (libsodium).

Prints the best of several rounds of CPU time per check (process_time: this thread, the checks run inline). The
libsodium check is `services.store.passwords._matches`, what a POP3, SMTP AUTH or store API login runs on the
argon2 pool.
Then the libsodium check's split into user time, kernel time and minor page faults (getrusage over the same
checks): libsodium maps its argon2 memory afresh for every check, so the kernel's share depends on the host's
transparent huge pages setting, which is printed beside it.
"""

from __future__ import annotations

import argparse
import resource
from collections.abc import Callable
from pathlib import Path

from bench.cputime import best_per_call_us
from services.store import passwords
from services.store.passwords import Argon2Settings

ROUNDS = 3
THP_SETTING = Path("/sys/kernel/mm/transparent_hugepage/enabled")


def transparent_huge_pages() -> str:
    """The host's THP mode, the bracketed word of the sysfs file ("always", "madvise", "never"), or "unknown"."""
    try:
        text = THP_SETTING.read_text()
    except OSError:
        return "unknown"
    return text.split("[", 1)[1].split("]", 1)[0] if "[" in text else "unknown"


def kernel_share(check: Callable[[], object], checks: int) -> tuple[float, float, float]:
    """(user ms, system ms, minor faults) per call of `check`, over `checks` calls after one to warm up."""
    check()
    before = resource.getrusage(resource.RUSAGE_THREAD)
    for _ in range(checks):
        check()
    after = resource.getrusage(resource.RUSAGE_THREAD)
    return (
        (after.ru_utime - before.ru_utime) * 1000 / checks,
        (after.ru_stime - before.ru_stime) * 1000 / checks,
        (after.ru_minflt - before.ru_minflt) / checks,
    )


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
    user, system, faults = kernel_share(lambda: passwords._matches(stored, "bench-password"), args.checks * ROUNDS)
    print(
        f"libsodium split: user {user:.1f} ms, system {system:.1f} ms, {faults:.0f} minor faults per check"
        f" (transparent huge pages: {transparent_huge_pages()})"
    )


if __name__ == "__main__":
    main()
