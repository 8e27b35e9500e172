"""CPU cost of the inbound checks (SPF, DKIM, DMARC) of one message with DNS cached, on one process.

The message is bench.run's smtp load (1 KiB, From load@remote.test, HELO client.remote.test, from 127.0.0.1),
unsigned and, with --signed, DKIM-signed; the records come from a local DNS server and every answer is cached by
the warm-up. Prints the best of several rounds of CPU time per message (process_time, all threads).
"""

from __future__ import annotations

import argparse
import asyncio
import time

from services.smtp_ingress.config import IngressSettings
from services.smtp_ingress.inbound import InboundChecks
from shared.netaddr import HostPort
from shared.spool import MessageSpool
from tests.delivery.dnsserver import DNSServer, Zone
from tests.smtp_ingress.inbound_dns import make_key

ROUNDS = 5
HELO = "client.remote.test"


def load_message(size: int) -> bytes:
    head = b"From: <load@remote.test>\r\nTo: <sink@bench.test>\r\nSubject: load\r\nMessage-Id: <1@remote.test>\r\n\r\n"
    line = b"x" * 78 + b"\r\n"
    return head + line * max(1, (size - len(head)) // len(line))


async def measure(checks: InboundChecks, message: bytes, count: int) -> float:
    runs = []
    for _ in range(ROUNDS):
        started = time.process_time()
        for _ in range(count):
            outcome = await checks.check("127.0.0.1", HELO, "load@remote.test", MessageSpool.of(message))
            assert outcome.reply is None
        runs.append((time.process_time() - started) / count * 1e6)
    return min(runs)


async def main(args: argparse.Namespace) -> None:
    key = make_key("remote.test")
    zone = Zone()
    zone.add("remote.test", "TXT", '"v=spf1 ip4:127.0.0.0/8 -all"')
    zone.add(HELO, "TXT", '"v=spf1 ip4:127.0.0.0/8 -all"')
    zone.add("_dmarc.remote.test", "TXT", '"v=DMARC1; p=reject"')
    zone.add(f"{key.selector}._domainkey.remote.test", "TXT", key.txt())
    server = DNSServer(zone).start()
    try:
        settings = IngressSettings(hostname="mx.bench.test", dns_nameservers=(HostPort("127.0.0.1", server.port),))
        checks = InboundChecks(settings)
        message = load_message(args.size)
        signed = key.sign(message)
        await checks.check("127.0.0.1", HELO, "load@remote.test", MessageSpool.of(signed))  # fills the caches
        print(f"unsigned: {await measure(checks, message, args.messages):.1f} us CPU per message")
        if args.signed:
            print(f"DKIM-signed: {await measure(checks, signed, args.messages // 10):.1f} us CPU per message")
        checks.close()
    finally:
        server.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--signed", action="store_true", help="also a DKIM-signed message (RSA 2048)")
    asyncio.run(main(parser.parse_args()))
