"""A stand-in child for `postroom run` tests: says it is up, then exits 0 on SIGTERM/SIGINT."""

from __future__ import annotations

import os
import signal
import sys


def main(crash_with: int | None = None) -> None:
    ready_file = os.environ.get("FAKE_READY_FILE")
    if crash_with is not None:
        # Crash only once the steady sibling handles signals, so the test sees it stopped by our SIGTERM: the
        # ready file is a FIFO, and opening it for reading returns when the sibling opens it for writing.
        if ready_file:
            signal.alarm(20)  # bounded: should the sibling never come, SIGALRM ends this process
            with open(ready_file, "rb") as fifo:
                fifo.read(1)
            signal.alarm(0)
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
        with open(ready_file, "wb") as ready:
            ready.write(b"1")
    signal.alarm(60)  # bounded: SIGALRM's default action ends it should a test forget it
    while True:
        signal.pause()


if __name__ == "__main__":
    main()
