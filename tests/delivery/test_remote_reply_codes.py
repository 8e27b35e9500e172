"""Replies whose code is not an SMTP refusal (999, 1yz, 2yz where a refusal was read) defer; they never bounce."""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest

from services.delivery.config import DeliverySettings
from services.delivery.mx import MailResolver
from services.delivery.outcome import Status
from services.delivery.remote import RemoteDelivery
from services.delivery.routing import Target
from shared.envelope import Envelope
from shared.queue_id import new_queue_id
from shared.settings import load_settings
from tests.delivery.conftest import make_message
from tests.faults.hostile_mx import HostileMX, Script


@pytest.fixture
def mx() -> Iterator[list[HostileMX]]:
    started: list[HostileMX] = []
    yield started
    for server in started:
        server.stop()


async def deliver(mx: list[HostileMX], script: Script) -> tuple[Status, str, str]:
    server = HostileMX(f"127.29.{random.randrange(1, 250)}.{random.randrange(1, 250)}", script).start()
    mx.append(server)
    route = f"odd.test={server.route}"
    settings = load_settings(DeliverySettings, hostname="mx.test", transport_map=route, relay_command_timeout="5s")
    remote = RemoteDelivery(settings, MailResolver((), 1.0))
    envelope = Envelope(new_queue_id(), "sender@origin.test", ("u@odd.test",))
    [found] = await remote(envelope, make_message(), "odd.test", [Target("u@odd.test", "u@odd.test", local=False)])
    return found.status, found.enhanced, found.diagnostic


@pytest.mark.parametrize(
    "script",
    [
        pytest.param(Script(rcpt_default=b"999 5.1.1 what\r\n"), id="999-to-rcpt"),
        pytest.param(Script(rcpt_default=b"150 1.0.0 hm\r\n"), id="150-to-rcpt"),
        pytest.param(Script(rcpt_default=b"252 2.1.5 cannot verify\r\n"), id="252-to-rcpt"),
        pytest.param(Script(mail=b"600 6.0.0 odd\r\n"), id="600-to-mail"),
        pytest.param(Script(data=b"999 nope\r\n"), id="999-to-data"),
        pytest.param(Script(dot=b"700 7.0.0 odd\r\n"), id="700-to-the-dot"),
    ],
)
async def test_a_code_outside_4yz_and_5yz_defers(mx: list[HostileMX], script: Script) -> None:
    status, enhanced, diagnostic = await deliver(mx, script)
    assert status is Status.TEMPORARY and enhanced[0] == "4", (enhanced, diagnostic)


async def test_real_refusals_still_decide(mx: list[HostileMX]) -> None:
    assert (await deliver(mx, Script(rcpt_default=b"550 5.1.1 no\r\n")))[:2] == (Status.PERMANENT, "5.1.1")
    assert (await deliver(mx, Script(rcpt_default=b"452 4.2.2 full\r\n")))[:2] == (Status.TEMPORARY, "4.2.2")
    assert (await deliver(mx, Script(mail=b"554 5.7.1 go away\r\n")))[:2] == (Status.PERMANENT, "5.7.1")
