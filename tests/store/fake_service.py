"""A stand-in child for `postroom run` tests: says it is up, then exits 0 on SIGTERM/SIGINT."""

from __future__ import annotations

import os
import signal
import sys


def main(crash_with: int | None = None) -> None:
    print(f"fake up pid={os.getpid()}", flush=True)
    print("to stderr", file=sys.stderr, flush=True)
    if crash_with is not None:
        sys.exit(crash_with)

    def on_signal(sig: int, _frame: object) -> None:
        print(f"fake got signal {sig}", flush=True)
        sys.exit(0)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.alarm(60)  # bounded: SIGALRM's default action ends it should a test forget it
    while True:
        signal.pause()


if __name__ == "__main__":
    main()
