"""CPU cost of making one SMTP session object: aiosmtpd's constructor versus `IngressSMTP.clone()`."""

from __future__ import annotations

import asyncio
from typing import Any

from bench.cputime import best_per_call_us
from services.smtp_ingress.session import IngressSMTP, SessionRegistry
from shared.limits import ConnectionLimiter

ROUNDS = 5
SESSIONS = 5000


class _Handler:
    async def handle_EHLO(self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]) -> Any:
        return responses

    async def auth_PLAIN(self, server: Any, args: list[str]) -> Any:
        return None


async def main() -> None:
    registry = SessionRegistry(ConnectionLimiter(10, 10), (), 3, 60.0)
    loop = asyncio.get_running_loop()

    def build() -> IngressSMTP:
        return IngressSMTP(_Handler(), registry=registry, listener="smtp", hostname="mx.test", loop=loop)

    template = build()
    for label, make in (("aiosmtpd constructor", build), ("clone", template.clone)):
        best = best_per_call_us(make, SESSIONS, ROUNDS)
        print(f"{label}: {best:.1f} us CPU per session (best of {ROUNDS} x {SESSIONS})")


if __name__ == "__main__":
    asyncio.run(main())
