"""Remote delivery against a loopback DNS server and SMTP sinks on 127.x.y.z:25, called in-process, and the enhanced
status code read from a reply."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from services.delivery.config import DeliverySettings
from services.delivery.mx import MailResolver
from services.delivery.outcome import RecipientOutcome, Status
from services.delivery.remote import RemoteDelivery, _enhanced
from services.delivery.routing import Target
from shared.envelope import Envelope
from shared.queue_id import new_queue_id
from shared.settings import load_settings
from tests.delivery.conftest import make_message
from tests.delivery.smtpsink import Behaviour


def remote_for(dns_server: Any, **overrides: Any) -> RemoteDelivery:
    settings = load_settings(
        DeliverySettings,
        dns_nameservers=dns_server.nameserver,
        delivery_dns_timeout="1s",
        relay_connect_timeout="3s",
        relay_greeting_timeout="1s",
        relay_command_timeout="10s",
        hostname="mx.postroom.test",
        **overrides,
    )
    return RemoteDelivery(settings, MailResolver(settings.dns_nameservers, settings.delivery_dns_timeout))


async def send(
    remote: RemoteDelivery, domain: str, *recipients: str, message: bytes | None = None
) -> list[RecipientOutcome]:
    envelope = Envelope(new_queue_id(), "sender@origin.test", tuple(recipients))
    targets = [Target(r, r, local=False) for r in recipients]
    return await remote(envelope, message or make_message(), domain, targets)


async def test_mx_in_preference_order_falls_back_to_next(
    zone: Any, dns_server: Any, sinks: Any, loopback_net: str
) -> None:
    zone.add("remote.test", "MX", "20 mx2.remote.test.", "10 mx1.remote.test.")
    zone.add("mx1.remote.test", "A", f"{loopback_net}.1")  # nothing listens there: connection refused
    zone.add("mx2.remote.test", "A", f"{loopback_net}.2")
    sink = sinks(f"{loopback_net}.2")
    [result] = await send(remote_for(dns_server), "remote.test", "user@remote.test")
    assert result.status is Status.DELIVERED, result
    assert result.remote_mta == "mx2.remote.test"
    assert result.diagnostic.startswith("250")
    [got] = sink.received
    assert got.rcpt_tos == ["user@remote.test"] and got.mail_from == "sender@origin.test"
    assert got.helo == "mx.postroom.test"
    assert dns_server.queries.index(("mx1.remote.test", "A")) < dns_server.queries.index(("mx2.remote.test", "A"))


async def test_each_address_of_a_host_tried_in_turn(zone: Any, dns_server: Any, sinks: Any, loopback_net: str) -> None:
    zone.add("remote.test", "MX", "10 mx.remote.test.")
    zone.add("mx.remote.test", "A", f"{loopback_net}.1", f"{loopback_net}.2")
    sink = sinks(f"{loopback_net}.2")
    [result] = await send(remote_for(dns_server), "remote.test", "user@remote.test")
    assert result.status is Status.DELIVERED and len(sink.received) == 1


async def test_implicit_mx_uses_the_domain_address(zone: Any, dns_server: Any, sinks: Any, loopback_net: str) -> None:
    zone.add("plain.test", "A", f"{loopback_net}.3")
    sink = sinks(f"{loopback_net}.3")
    [result] = await send(remote_for(dns_server), "plain.test", "user@plain.test")
    assert result.status is Status.DELIVERED and result.remote_mta == "plain.test"
    assert len(sink.received) == 1


async def test_null_mx_bounces_with_5_1_10(zone: Any, dns_server: Any) -> None:
    zone.add("nomail.test", "MX", "0 .")
    [result] = await send(remote_for(dns_server), "nomail.test", "user@nomail.test")
    assert (result.status, result.enhanced) == (Status.PERMANENT, "5.1.10")


async def test_nxdomain_bounces(dns_server: Any) -> None:
    [result] = await send(remote_for(dns_server), "missing.test", "user@missing.test")
    assert (result.status, result.enhanced) == (Status.PERMANENT, "5.1.2")


async def test_servfail_and_timeout_are_retried(zone: Any, dns_server: Any) -> None:
    zone.servfail.add("broken.test")
    zone.silent.add("slow.test")
    remote = remote_for(dns_server)
    [broken] = await send(remote, "broken.test", "user@broken.test")
    [slow] = await send(remote, "slow.test", "user@slow.test")
    assert (broken.status, broken.enhanced) == (Status.TEMPORARY, "4.4.3")
    assert (slow.status, slow.enhanced) == (Status.TEMPORARY, "4.4.3")


async def test_unreachable_mx_is_retried(zone: Any, dns_server: Any, loopback_net: str) -> None:
    zone.add("down.test", "MX", "10 mx.down.test.")
    zone.add("mx.down.test", "A", f"{loopback_net}.9")
    [result] = await send(remote_for(dns_server), "down.test", "user@down.test")
    assert result.status is Status.TEMPORARY and result.enhanced == "4.4.1"
    assert "mx.down.test" in result.diagnostic


async def test_per_recipient_rcpt_results(zone: Any, dns_server: Any, sinks: Any, loopback_net: str) -> None:
    zone.add("remote.test", "MX", "10 mx.remote.test.")
    zone.add("mx.remote.test", "A", f"{loopback_net}.4")
    sink = sinks(f"{loopback_net}.4", Behaviour(reject={"gone@remote.test"}, defer={"busy@remote.test"}))
    results = await send(
        remote_for(dns_server), "remote.test", "ok@remote.test", "gone@remote.test", "busy@remote.test"
    )
    by = {r.recipient: r for r in results}
    assert by["ok@remote.test"].status is Status.DELIVERED
    assert (by["gone@remote.test"].status, by["gone@remote.test"].enhanced) == (Status.PERMANENT, "5.1.1")
    assert by["gone@remote.test"].diagnostic.startswith("550 5.1.1")
    assert (by["busy@remote.test"].status, by["busy@remote.test"].enhanced) == (Status.TEMPORARY, "4.2.1")
    [got] = sink.received
    assert got.rcpt_tos == ["ok@remote.test"]


async def test_data_replies_decide_for_accepted_recipients(
    zone: Any, dns_server: Any, sinks: Any, loopback_net: str
) -> None:
    zone.add("hard.test", "MX", "10 mx.hard.test.")
    zone.add("mx.hard.test", "A", f"{loopback_net}.5")
    zone.add("soft.test", "MX", "10 mx.soft.test.")
    zone.add("mx.soft.test", "A", f"{loopback_net}.6")
    sinks(f"{loopback_net}.5", Behaviour(reject_data=True))
    sinks(f"{loopback_net}.6", Behaviour(defer_data=1))
    remote = remote_for(dns_server)
    [hard] = await send(remote, "hard.test", "a@hard.test")
    [soft] = await send(remote, "soft.test", "a@soft.test")
    assert (hard.status, hard.enhanced) == (Status.PERMANENT, "5.7.1")
    assert (soft.status, soft.enhanced) == (Status.TEMPORARY, "4.3.0")


async def test_starttls_crlf_and_dot_stuffing(
    zone: Any, dns_server: Any, sinks: Any, loopback_net: str, tmp_path: Path
) -> None:
    zone.add("tls.test", "MX", "10 mx.tls.test.")
    zone.add("mx.tls.test", "A", f"{loopback_net}.7")
    sink = sinks(f"{loopback_net}.7", tls_dir=tmp_path)
    message = b"Subject: dots\r\n\r\n.leading dot\r\n.\r\nbare LF\nbare CR\rend\r\n..two\r\n"
    [result] = await send(remote_for(dns_server), "tls.test", "u@tls.test", message=message)
    assert result.status is Status.DELIVERED, result
    [got] = sink.received
    assert got.tls, "opportunistic STARTTLS not used"
    # The sink un-stuffs dots: what arrives is the message with every line end CRLF and no line lost.
    assert got.content == b"Subject: dots\r\n\r\n.leading dot\r\n.\r\nbare LF\r\nbare CR\r\nend\r\n..two\r\n"


async def test_transport_map_overrides_mx(zone: Any, dns_server: Any, sinks: Any, loopback_net: str) -> None:
    sink = sinks(f"{loopback_net}.8", port=2525)
    zone.add("hub.test", "MX", "10 hubmx.test.")
    zone.add("hubmx.test", "A", f"{loopback_net}.10")
    hub = sinks(f"{loopback_net}.10")
    remote = remote_for(dns_server, transport_map=f"mapped.test=[{loopback_net}.8]:2525,.sub.test=hub.test")
    [mapped] = await send(remote, "mapped.test", "u@mapped.test")  # NXDOMAIN in DNS: never looked up
    [sub] = await send(remote, "a.sub.test", "u@a.sub.test")  # unbracketed: MX of hub.test
    assert mapped.status is Status.DELIVERED and len(sink.received) == 1
    assert sub.status is Status.DELIVERED and len(hub.received) == 1
    assert ("mapped.test", "MX") not in dns_server.queries


async def test_address_literal_needs_no_dns(dns_server: Any, sinks: Any, loopback_net: str) -> None:
    sink = sinks(f"{loopback_net}.12")
    domain = f"[{loopback_net}.12]"
    [result] = await send(remote_for(dns_server), domain, f"u@{domain}")
    assert result.status is Status.DELIVERED and len(sink.received) == 1
    assert dns_server.queries == []


async def test_utf8_address_to_a_server_without_smtputf8_bounces_5_6_7(
    zone: Any, dns_server: Any, sinks: Any, loopback_net: str
) -> None:
    zone.add("remote.test", "A", f"{loopback_net}.13")
    zone.add("utf8.test", "A", f"{loopback_net}.14")
    sink = sinks(f"{loopback_net}.13", smtputf8=False)
    capable = sinks(f"{loopback_net}.14")
    [result] = await send(remote_for(dns_server), "remote.test", "jörg@remote.test")
    assert (result.status, result.enhanced) == (Status.PERMANENT, "5.6.7")
    assert sink.received == []
    [result] = await send(remote_for(dns_server), "utf8.test", "jörg@utf8.test")
    assert result.status is Status.DELIVERED
    assert capable.received[0].rcpt_tos == ["jörg@utf8.test"]


async def test_idn_domain_goes_as_a_labels_to_a_server_without_smtputf8(
    zone: Any, dns_server: Any, sinks: Any, loopback_net: str
) -> None:
    """An ASCII local part at a U-label domain has an ASCII form (RFC 5890 A-labels): sent so, not bounced."""
    zone.add("xn--bcher-kva.test", "A", f"{loopback_net}.17")
    sink = sinks(f"{loopback_net}.17", smtputf8=False)
    remote = remote_for(dns_server)
    envelope = Envelope(new_queue_id(), "versand@bücher.test", ("info@bücher.test",))
    targets = [Target("info@bücher.test", "info@bücher.test", local=False)]
    [result] = await remote(envelope, make_message(), "bücher.test", targets)
    assert result.status is Status.DELIVERED, result
    [got] = sink.received
    assert (got.mail_from, got.rcpt_tos) == ("versand@xn--bcher-kva.test", ["info@xn--bcher-kva.test"])


async def test_dsn_parameters_go_to_a_hop_that_advertises_dsn(zone: Any, dns_server: Any, loopback_net: str) -> None:
    """RFC 3461 §5.2: RET, ENVID, NOTIFY and ORCPT are passed on as received (xtext encoded again); the relay is
    marked so that no success notice is sent by us. A hop without DSN gets none of them (test above)."""
    from tests.delivery.dsnsink import DSNSink

    zone.add("dsn.test", "A", f"{loopback_net}.18")
    sink = DSNSink(f"{loopback_net}.18").start()
    try:
        envelope = Envelope(
            new_queue_id(),
            "sender@origin.test",
            ("a@dsn.test", "b@dsn.test"),
            dsn_ret="HDRS",
            dsn_envid="Id 1+2",
            dsn_recipients=(("a@dsn.test", "SUCCESS,FAILURE", "rfc822;A@Dsn.test"),),
        )
        targets = [Target(r, r, local=False) for r in envelope.recipients]
        results = await remote_for(dns_server)(envelope, make_message(), "dsn.test", targets)
    finally:
        sink.stop()
    assert [(r.status, r.dsn_passed) for r in results] == [(Status.DELIVERED, True)] * 2
    mail, rcpt_a, rcpt_b = sink.handler.commands
    assert mail.startswith("MAIL FROM:<sender@origin.test>") and mail.endswith(" RET=HDRS ENVID=Id+201+2B2")
    assert rcpt_a == "RCPT TO:<a@dsn.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;A@Dsn.test"
    assert rcpt_b == "RCPT TO:<b@dsn.test>"


async def test_silent_mx_times_out_and_the_next_one_is_tried(
    zone: Any, dns_server: Any, sinks: Any, loopback_net: str
) -> None:
    """MX 10 accepts the connection but never greets: after the greeting timeout MX 20 gets the message."""
    import socket

    silent = socket.socket()
    silent.bind((f"{loopback_net}.15", 25))
    silent.listen()
    try:
        zone.add("remote.test", "MX", "10 mx1.remote.test.", "20 mx2.remote.test.")
        zone.add("mx1.remote.test", "A", f"{loopback_net}.15")
        zone.add("mx2.remote.test", "A", f"{loopback_net}.16")
        sink = sinks(f"{loopback_net}.16")
        [result] = await send(remote_for(dns_server), "remote.test", "user@remote.test")
        assert result.status is Status.DELIVERED and result.remote_mta == "mx2.remote.test"
        assert len(sink.received) == 1
    finally:
        silent.close()


class BrokenTLSServer:
    """Advertises STARTTLS, answers 220 to it and then sends junk instead of a TLS handshake; accepts plaintext."""

    def __init__(self) -> None:
        self.connections = 0
        self.delivered: list[bytes] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        writer.write(b"220 broken.test ESMTP\r\n")
        try:
            while line := await reader.readline():
                command = line.strip().upper()
                if command.startswith(b"EHLO"):
                    writer.write(b"250-broken.test\r\n250 STARTTLS\r\n")
                elif command == b"STARTTLS":
                    writer.write(b"220 go ahead\r\nthis is not TLS at all\r\n" * 4)
                    await writer.drain()
                    break
                elif command == b"DATA":
                    writer.write(b"354 go on\r\n")
                    await writer.drain()
                    data = b""
                    while (chunk := await reader.readline()) != b".\r\n":
                        data += chunk
                    self.delivered.append(data)
                    writer.write(b"250 2.0.0 ok\r\n")
                elif command == b"QUIT":
                    writer.write(b"221 bye\r\n")
                    break
                else:
                    writer.write(b"250 2.0.0 ok\r\n")
                await writer.drain()
        finally:
            writer.close()


async def test_failed_starttls_falls_back_to_plaintext(zone: Any, dns_server: Any, loopback_net: str) -> None:
    fake = BrokenTLSServer()
    server = await asyncio.start_server(fake.handle, f"{loopback_net}.17", 25)
    try:
        zone.add("broken.test", "A", f"{loopback_net}.17")
        [result] = await send(remote_for(dns_server), "broken.test", "u@broken.test")
        assert result.status is Status.DELIVERED, result
        assert fake.connections == 2 and len(fake.delivered) == 1
    finally:
        server.close()
        await server.wait_closed()


async def test_domain_without_mx_or_address_bounces(zone: Any, dns_server: Any) -> None:
    zone.add("empty.test", "TXT", '"v=spf1 -all"')
    [result] = await send(remote_for(dns_server), "empty.test", "user@empty.test")
    assert (result.status, result.enhanced) == (Status.PERMANENT, "5.1.2")


async def test_mx_host_without_address_is_retried(zone: Any, dns_server: Any) -> None:
    zone.add("dangling.test", "MX", "10 nowhere.dangling.test.")
    [result] = await send(remote_for(dns_server), "dangling.test", "user@dangling.test")
    assert (result.status, result.enhanced) == (Status.TEMPORARY, "4.4.4")


def test_enhanced_code_from_reply() -> None:
    assert _enhanced(550, "5.1.1 no such user") == "5.1.1"
    assert _enhanced(450, "5.1.1 mismatched class") == "4.0.0"
    assert _enhanced(554, "go away") == "5.0.0"
