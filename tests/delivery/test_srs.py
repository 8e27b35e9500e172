"""SRS through the real delivery: an alias's remote copy goes out with an SRS sender, and a bounce sent back to that
address reaches the original sender's domain (a delivery process, a local DNS server, SMTP sinks)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import SecretStr

from services.store import Store
from shared.srs import Srs
from tests.delivery.conftest import TEST_SCHEDULE, Broker
from tests.helpers import ServiceProcess, wait_until

SECRET = "srs test secret"


async def test_forwarded_copy_gets_an_srs_sender_and_its_bounce_goes_back_to_the_sender(
    start_service: Callable[..., ServiceProcess],
    broker: Broker,
    store: Store,
    zone: Any,
    dns_server: Any,
    sinks: Any,
    loopback_net: str,
) -> None:
    await store.accounts.add_domain("example.test")
    await store.accounts.add_user("carol@example.test", "secret")
    await store.accounts.add_alias("fwd@example.test", ["dest@remote.test", "carol@example.test"])
    zone.add("remote.test", "MX", "10 mx.remote.test.")
    zone.add("mx.remote.test", "A", f"{loopback_net}.1")
    zone.add("origin.test", "MX", "10 mx.origin.test.")
    zone.add("mx.origin.test", "A", f"{loopback_net}.2")
    remote, origin = sinks(f"{loopback_net}.1"), sinks(f"{loopback_net}.2")
    start_service(
        "delivery",
        POSTROOM_RETRY_SCHEDULE=TEST_SCHEDULE,
        POSTROOM_DNS_NAMESERVERS=dns_server.nameserver,
        POSTROOM_SRS_SECRET=SECRET,
    )
    # A direct remote recipient of the same message keeps the original sender.
    await broker.publish(["fwd@example.test", "other@remote.test"], sender="someone@origin.test")

    async def relayed() -> bool:
        return len(remote.received) == 2

    await wait_until(relayed, what="both copies relayed")
    by_sender = {got.mail_from: got.rcpt_tos for got in remote.received}
    srs_sender = next(sender for sender in by_sender if sender != "someone@origin.test")
    assert by_sender["someone@origin.test"] == ["other@remote.test"]
    assert by_sender[srs_sender] == ["dest@remote.test"]
    assert srs_sender.startswith("SRS0=") and srs_sender.endswith("=origin.test=someone@example.test")
    assert Srs(SecretStr(SECRET)).reverse(srs_sender) == "someone@origin.test"

    # The destination bounces to the SRS address: the bounce is relayed to the original sender, envelope untouched.
    await broker.publish([srs_sender], sender="")

    async def bounced() -> bool:
        return len(origin.received) == 1

    await wait_until(bounced, what="bounce relayed to the original sender")
    [got] = origin.received
    assert (got.mail_from, got.rcpt_tos) == ("<>", ["someone@origin.test"])


async def test_forged_srs_address_is_no_mailbox(
    start_service: Callable[..., ServiceProcess], broker: Broker, store: Store
) -> None:
    await store.accounts.add_domain("example.test")
    start_service("delivery", POSTROOM_RETRY_SCHEDULE=TEST_SCHEDULE, POSTROOM_SRS_SECRET=SECRET)
    forged = Srs(SecretStr("another secret")).forward("victim@origin.test", "example.test")
    envelope = await broker.publish([forged], sender="")

    async def refused() -> bool:
        return any(e["event"] == "bounced" for e in await store.trace.events(envelope.queue_id))

    await wait_until(refused, what="the forged SRS recipient refused")
    [bounced] = [e for e in await store.trace.events(envelope.queue_id) if e["event"] == "bounced"]
    assert [r.lower() for r in bounced["recipients"]] == [forged.lower()]
    assert bounced["report"] is None  # a bounce is never answered with a bounce
