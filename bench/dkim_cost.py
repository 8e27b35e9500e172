"""CPU cost of DKIM signing in the delivery: the body hash, our signature field, and dkimpy's own sign for scale.

.venv/bin/python -m bench.dkim_cost [--rounds 50]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import dkim

from services.delivery.dkim import header_section, relaxed_body_hash, signature_header
from services.store.dkim import DkimKey, new_key_pair


def per_call(action: Callable[[], object], rounds: int) -> float:
    """Milliseconds per call: the best of three runs of `rounds` calls (the least disturbed by other load)."""
    best = float("inf")
    for _ in range(3):
        start = time.process_time()
        for _ in range(rounds):
            action()
        best = min(best, (time.process_time() - start) / rounds * 1000)
    return best


def compare(algorithm: str, message: bytes, body_hash: bytes, rounds: int) -> tuple[float, float]:
    """(our signature field, dkim.sign of the whole message) in ms of CPU per call, with a new key."""
    public, private = new_key_pair(algorithm)  # type: ignore[arg-type]
    key = DkimKey("example.test", "s1", algorithm, 0.0, public, private)  # type: ignore[arg-type]
    headers, _ = header_section(message)
    ours = per_call(lambda: signature_header(headers, key, body_hash, 1), rounds)
    a = b"rsa-sha256" if algorithm == "rsa" else b"ed25519-sha256"
    canonicalize = (b"relaxed", b"relaxed")

    def sign() -> object:
        return dkim.sign(
            message, b"s1", b"example.test", private.encode(), canonicalize=canonicalize, signature_algorithm=a
        )

    return ours, per_call(sign, rounds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=50)
    rounds = parser.parse_args().rounds
    message = (
        b"From: Alice <alice@example.test>\r\nTo: bob@remote.test\r\nSubject: a benchmark\r\n"
        b"Date: Wed, 2 Dec 2026 13:00:00 +0000\r\nMessage-ID: <1@example.test>\r\n\r\n"
    ) + b"A line of text of a usual length, seventy-six characters or so, and more.\r\n" * 128
    _, start = header_section(message)
    body = memoryview(message)[start:]
    body_hash = relaxed_body_hash(body)
    for algorithm in ("rsa", "ed25519"):
        ours, theirs = compare(algorithm, message, body_hash, rounds)
        print(f"{algorithm}: signature field {ours:.2f} ms CPU; dkim.sign of the whole message {theirs:.2f} ms")
    print(f"body hash of {len(body)} bytes: {per_call(lambda: relaxed_body_hash(body), rounds):.3f} ms CPU")
    big = memoryview(b"A line of text of a usual length, seventy-six characters or so, and more.\r\n" * 350_000)
    print(f"body hash of {len(big) >> 20} MiB: {per_call(lambda: relaxed_body_hash(big), 1) / 1000:.2f} s CPU")


if __name__ == "__main__":
    main()
