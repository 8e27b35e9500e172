"""CPU cost of the POP3 work per message that needs no socket or Redis: parsing a pipelined RETR line and encoding
a message body for the wire (line ends, dot-stuffing, the dot line), or sending one the store flagged as in wire form.

The body is bench.run's pop3 load (10 KiB by default) or, with --real, headers with dots and base64 lines. Prints
the best of several rounds of CPU time per message (process_time), for each part and for both together.
"""

from __future__ import annotations

import argparse
import random

from bench.cputime import best_per_call_us
from bench.run import pop3_body
from services.pop3.command import parse
from services.pop3.response import BodyEncoder

ROUNDS = 7


def real_body(size: int) -> bytes:
    rng = random.Random(1939)
    alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    head = b"".join(b"Received: from mx%d.example.com (mx.example.com [192.0.2.%d])\r\n" % (i, i) for i in range(10))
    lines = [bytes(rng.choice(alphabet) for _ in range(76)) + b"\r\n" for _ in range(size // 78)]
    return (head + b"\r\n" + b"".join(lines))[:size]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=10240)
    parser.add_argument("--messages", type=int, default=5000, help="messages per round")
    parser.add_argument("--real", action="store_true", help="a body with dotted headers and base64 lines")
    args = parser.parse_args()
    body = real_body(args.size) if args.real else pop3_body(args.size)

    def encode() -> bytes:
        encoder = BodyEncoder()
        return encoder.feed(body) + encoder.finish()

    def send_as_stored() -> bytes:  # a body the store flagged as in wire form (MessageInfo.wire)
        encoder = BodyEncoder(wire=True)
        return encoder.feed(body) + encoder.finish()

    line = b"RETR 123\r\n"
    encode_us = best_per_call_us(encode, args.messages, ROUNDS)
    wire_us = best_per_call_us(send_as_stored, args.messages, ROUNDS)
    parse_us = best_per_call_us(lambda: parse(line), args.messages, ROUNDS)
    print(f"encode {len(body)} octets: {encode_us:.1f} us CPU per message")
    print(f"send {len(body)} octets stored in wire form: {wire_us:.1f} us CPU per message")
    print(f"parse {line!r}: {parse_us:.2f} us CPU per line")


if __name__ == "__main__":
    main()
