"""A stand-in child for `postroom run` tests: says it is up, then exits 0 on SIGTERM/SIGINT."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path


def main(crash_with: int | None = None) -> None:
    ready_file = os.environ.get("FAKE_READY_FILE")
    if crash_with is not None:
        # Crash only once the steady sibling handles signals, so the test sees it stopped by our SIGTERM.
        deadline = time.monotonic() + 20
        while ready_file and not Path(ready_file).exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        print(f"fake crashing pid={os.getpid()}", flush=True)
        sys.exit(crash_with)

    def on_signal(sig: int, _frame: object) -> None:
        print(f"fake got signal {sig}", flush=True)
        sys.exit(0)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    print(f"fake up pid={os.getpid()} metrics={os.environ.get('POSTROOM_METRICS_LISTEN', '')}", flush=True)
    print("to stderr", file=sys.stderr, flush=True)
    if ready_file:
        Path(ready_file).touch()
    signal.alarm(60)  # bounded: SIGALRM's default action ends it should a test forget it
    while True:
        signal.pause()


if __name__ == "__main__":
    main()
