"""CPU cost of one password check at Postroom's argon2id cost, by each library the store can check with.

Prints the best of several rounds of CPU time per check (process_time: this thread, the checks run inline) for
libsodium and argon2-cffi, the two checks `POSTROOM_ARGON2_CHECKER` chooses between (services/store/argon2_checkers.py),
and how the installed argon2-cffi-bindings was built: PyPI's SSE2 wheel, or built on this host (`make venv`,
scripts/native-argon2.sh). Then each library's split into user time, kernel time and minor page faults (getrusage
over the same checks): libsodium maps its argon2 memory afresh for every check, so the kernel's share depends on
the host's transparent huge pages setting, which is printed beside it.
"""

from __future__ import annotations

import argparse
import importlib.metadata
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


def bindings_build() -> str:
    """Whether a PyPI wheel or a build on this host: a local build carries a plain linux tag, PyPI's a manylinux one."""
    try:
        wheel = importlib.metadata.distribution("argon2-cffi-bindings").read_text("WHEEL") or ""
    except importlib.metadata.PackageNotFoundError:
        return "unknown build"
    tags = [line.split(":", 1)[1].strip() for line in wheel.splitlines() if line.startswith("Tag:")]
    if any("manylinux" in tag or "musllinux" in tag for tag in tags):
        return "PyPI wheel"
    return "built here" if tags else "unknown build"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checks", type=int, default=10, help="checks per round")
    args = parser.parse_args()
    settings = Argon2Settings()
    passwords.configure(settings)
    stored = passwords.hash_password("bench-password")
    print(
        f"argon2id m={settings.argon2_memory_kib} KiB, t={settings.argon2_time_cost}, p={settings.argon2_parallelism}"
    )
    password = "bench-password"
    encoded = stored.encode()
    checks = {
        "libsodium": lambda: passwords._sodium_matches(encoded, password),
        f"argon2-cffi ({bindings_build()})": lambda: passwords._cffi_matches(stored, password),
    }
    assert passwords._sodium_matches(encoded, password) and not passwords._sodium_matches(encoded, "wrong")
    assert passwords._cffi_matches(stored, password) and not passwords._cffi_matches(stored, "wrong")
    for name, check in checks.items():
        cpu = best_per_call_us(check, args.checks, ROUNDS) / 1000
        user, system, faults = kernel_share(check, args.checks * ROUNDS)
        print(
            f"{name}: {cpu:.1f} ms CPU per check; user {user:.1f} ms, system {system:.1f} ms,"
            f" {faults:.0f} minor faults per check"
        )
    print(f"transparent huge pages: {transparent_huge_pages()}")


if __name__ == "__main__":
    main()
