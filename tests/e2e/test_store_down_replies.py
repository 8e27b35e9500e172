"""Redis down: SMTP and POP3 answer a clear temporary error, log one line without a traceback, and count it."""

from __future__ import annotations

import asyncio
import poplib
import smtplib
import urllib.request
from collections.abc import Callable

from services.store import Store
from shared.netaddr import parse_host_port
from tests.harness import ServiceProcess
from tests.redis_private import PrivateRedis

PASSWORD = "outage pass"


def metric(service: ServiceProcess, name: str) -> float:
    """The sum of a counter's series on the service's /metrics."""
    with urllib.request.urlopen(f"{service.metrics_url}/metrics", timeout=10) as response:
        text = response.read().decode()
    return sum(float(line.rsplit(maxsplit=1)[1]) for line in text.splitlines() if line.startswith(name + "{"))


async def test_redis_down_gives_temporary_replies_without_tracebacks(
    private_redis: PrivateRedis, base_env: dict[str, str], start_service: Callable[..., ServiceProcess]
) -> None:
    namespace = base_env["POSTROOM_NAMESPACE"]
    seed = Store.connect(private_redis.url, namespace)
    await seed.accounts.add_domain("example.test")
    await seed.accounts.add_user("carol@example.test", PASSWORD)
    await seed.close()
    ingress = start_service("smtp_ingress", POSTROOM_REDIS_URL=private_redis.url)
    pop3 = start_service("pop3", POSTROOM_REDIS_URL=private_redis.url)
    smtp_port = parse_host_port(base_env["POSTROOM_SMTP_LISTEN"]).port
    pop3_port = parse_host_port(base_env["POSTROOM_POP3_LISTEN"]).port

    def rcpt() -> tuple[int, bytes]:
        with smtplib.SMTP("127.0.0.1", smtp_port, timeout=60) as smtp:
            smtp.ehlo("client.remote.test")
            smtp.mail("dan@remote.test")
            return smtp.rcpt("carol@example.test")

    def login() -> str:
        pop = poplib.POP3("127.0.0.1", pop3_port, timeout=60)
        try:
            pop.user("carol@example.test")
            return pop.pass_(PASSWORD).decode()
        except poplib.error_proto as exc:
            return str(exc.args[0].decode())
        finally:
            pop.quit()

    private_redis.stop()
    seen = {"rcpt": await asyncio.to_thread(rcpt), "login": await asyncio.to_thread(login)}
    private_redis.start()
    seen["rcpt after"] = await asyncio.to_thread(rcpt)

    assert seen == {
        "rcpt": (451, b"4.3.0 Temporary lookup failure, please try again later"),
        "login": "-ERR [SYS/TEMP] Temporary server failure, try again later",
        "rcpt after": (250, b"2.1.5 Ok"),
    }
    for service, counter in ((ingress, "postroom_smtp_store_errors_total"), (pop3, "postroom_pop3_store_errors_total")):
        log = service.log_path.read_text(errors="replace")
        assert "store unavailable" in log
        assert "Traceback" not in log
        assert metric(service, counter) >= 1
