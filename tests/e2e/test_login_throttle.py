"""One account, one throttle: two ingress processes and a POP3 process sharing Redis count each other's failed
logins under one counter, however each login spells the account."""

from __future__ import annotations

import asyncio
import base64
import poplib
import smtplib
from collections.abc import Callable

from services.store import Store
from shared.netaddr import parse_host_port
from tests.harness import ServiceProcess
from tests.helpers import client_tls, free_port

PASSWORD = "correct horse battery staple"
BASE_DELAY = 0.01


def _port(service: ServiceProcess, name: str) -> int:
    return parse_host_port(service.env[name]).port


def smtp_auth_fails(service: ServiceProcess, login: str) -> int:
    with smtplib.SMTP_SSL(
        "127.0.0.1", _port(service, "POSTROOM_SMTPS_LISTEN"), timeout=30, context=client_tls()
    ) as smtp:
        smtp.ehlo("client.example.org")
        blob = base64.b64encode(f"\0{login}\0wrong".encode()).decode()
        code, _ = smtp.docmd("AUTH", f"PLAIN {blob}")
        return code


def pop3_login_fails(service: ServiceProcess, login: str) -> bool:
    pop = poplib.POP3("127.0.0.1", _port(service, "POSTROOM_POP3_LISTEN"), timeout=30)
    try:
        pop.user(login)
        pop.pass_("wrong")
    except poplib.error_proto:
        return True
    finally:
        pop.close()
    return False


async def test_replicas_of_both_protocols_share_one_counter_per_account(
    store: Store, start_service: Callable[..., ServiceProcess]
) -> None:
    await store.accounts.add_domain("example.test")
    await store.accounts.add_user("carol@example.test", PASSWORD)
    delays = {"POSTROOM_SMTP_AUTH_FAILURE_DELAY": str(BASE_DELAY), "POSTROOM_POP3_AUTH_FAILURE_DELAY": str(BASE_DELAY)}
    first = start_service("smtp_ingress", **delays)
    own_ports = {f"POSTROOM_{name}_LISTEN": f"127.0.0.1:{free_port()}" for name in ("SMTP", "SUBMISSION", "SMTPS")}
    second = start_service("smtp_ingress", **delays, **own_ports)
    pop3 = start_service("pop3", **delays)

    assert await asyncio.to_thread(smtp_auth_fails, first, "carol@example.test") == 535
    assert await asyncio.to_thread(smtp_auth_fails, second, " CAROL@Example.Test.. ") == 535
    assert await asyncio.to_thread(pop3_login_fails, pop3, "Carol@Example.Test.")

    # The third failure, in a third process, waited as the third one: 4 x the base delay.
    assert f"delay={BASE_DELAY * 4}" in pop3.log()
    throttle = store.login_throttle(BASE_DELAY, 1.0)
    assert await throttle.failures(login="carol@example.test") == 3
    assert await throttle.failures(ip="127.0.0.1") == 3
