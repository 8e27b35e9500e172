"""After a Redis restart every service answers its first request: dead pooled connections reconnect unseen."""

from __future__ import annotations

import asyncio
import poplib
import smtplib
from collections.abc import Callable

from services.store import Store
from shared.netaddr import parse_host_port
from tests.harness import ServiceProcess
from tests.helpers import http_status, wait_until
from tests.redis_private import PrivateRedis

PASSWORD = "restart pass"
SERVICES = ("store", "smtp_ingress", "delivery", "pop3")


async def readyz(service: ServiceProcess) -> int:
    return await asyncio.to_thread(http_status, f"{service.metrics_url}/readyz")


async def ready(*services: ServiceProcess) -> None:
    """Each service ready, so it holds a live pooled connection for the next restart to kill."""
    for service in services:

        async def answers(service: ServiceProcess = service) -> bool:
            return await readyz(service) == 200

        await wait_until(answers, timeout=30, what=f"{service.name} ready")


async def test_services_ride_over_a_redis_restart(
    private_redis: PrivateRedis, base_env: dict[str, str], start_service: Callable[..., ServiceProcess]
) -> None:
    namespace = base_env["POSTROOM_NAMESPACE"]
    seed = Store.connect(private_redis.url, namespace)
    await seed.accounts.add_domain("example.test")
    await seed.accounts.add_user("carol@example.test", PASSWORD)
    await seed.close()
    services = {name: start_service(name, POSTROOM_REDIS_URL=private_redis.url) for name in SERVICES}
    pop3_port = parse_host_port(base_env["POSTROOM_POP3_LISTEN"]).port
    smtp_port = parse_host_port(base_env["POSTROOM_SMTP_LISTEN"]).port

    def login() -> str:
        pop = poplib.POP3("127.0.0.1", pop3_port, timeout=30)
        try:
            pop.user("carol@example.test")
            return pop.pass_(PASSWORD).decode().split()[0]
        except poplib.error_proto as exc:
            return str(exc)
        finally:
            pop.quit()

    def rcpt() -> int:
        with smtplib.SMTP("127.0.0.1", smtp_port, timeout=30) as smtp:
            smtp.ehlo("client.remote.test")
            smtp.mail("dan@remote.test")
            return smtp.rcpt("carol@example.test")[0]

    def send() -> int:
        with smtplib.SMTP("127.0.0.1", smtp_port, timeout=30) as smtp:
            refused = smtp.sendmail(
                "dan@remote.test", ["carol@example.test"], b"Subject: after a restart\r\n\r\nhi\r\n"
            )
            return 250 if not refused else 0

    # Each step follows a restart of its own, so each meets dead connections; everything is compared at the end.
    private_redis.restart()
    seen: dict[str, object] = {f"{name} /readyz": await readyz(service) for name, service in services.items()}

    await ready(*services.values())
    private_redis.restart()
    seen["pop3 login"] = await asyncio.to_thread(login)

    await ready(*services.values())
    private_redis.restart()
    seen["smtp rcpt"] = await asyncio.to_thread(rcpt)

    # The delivery stores through its own connections, dead since the restart: at once, not after a retry delay
    # (the first is a minute), and once. The ingress is made ready first so that it is the delivery under test.
    await ready(*services.values())
    private_redis.restart()
    await ready(services["smtp_ingress"])
    seen["smtp send"] = await asyncio.to_thread(send)
    reader = Store.connect(private_redis.url, namespace)  # made after the restart: not the client under test

    async def stored() -> bool:
        return len(await reader.mailboxes.snapshot("carol@example.test")) > 0

    try:
        await wait_until(stored, timeout=30, what="the message stored after the restart")
    except AssertionError:
        pass  # reported below with everything else seen
    finally:
        seen["stored"] = len(await reader.mailboxes.snapshot("carol@example.test"))
        await reader.close()

    expected: dict[str, object] = {f"{name} /readyz": 200 for name in SERVICES}
    expected.update({"pop3 login": "+OK", "smtp rcpt": 250, "smtp send": 250, "stored": 1})
    assert seen == expected
