"""Inbound SPF/DKIM/DMARC on port 25: a real SMTP client, the real ingress, records from a local DNS server, the
message read back off the queue with its Authentication-Results: header."""

from __future__ import annotations

import smtplib
import socket
from collections.abc import Callable
from typing import Any

import pytest
from prometheus_client import REGISTRY

from services.smtp_ingress import replies
from shared.netaddr import HostPort
from tests.delivery.dnsserver import DNSServer
from tests.helpers import wait_until_sync
from tests.smtp_ingress.conftest import ALICE, HOSTNAME, PASSWORD, RunningIngress, queue_depth, read_queue
from tests.smtp_ingress.inbound_dns import SigningKey

AR = b"Authentication-Results: "


def message(sender_domain: str, body: str = "Hello Alice.\r\n", extra: str = "") -> bytes:
    return (f"{extra}From: Someone <someone@{sender_domain}>\r\nTo: {ALICE}\r\nSubject: checked\r\n\r\n{body}").encode()


@pytest.fixture
def checked(make_ingress: Callable[..., RunningIngress], accounts: None, inbound_dns: DNSServer) -> RunningIngress:
    """An ingress that trusts no network (so 127.0.0.1 is checked) and resolves from the local DNS server."""
    return make_ingress(
        trusted_networks="",
        inbound_checks=True,
        dns_nameservers=(HostPort("127.0.0.1", inbound_dns.port),),
        inbound_dns_timeout=0.5,
    )


def deliver(ingress: RunningIngress, sender: str, data: bytes, helo: str = "client.pass.test") -> tuple[int, bytes]:
    with ingress.smtp() as client:
        client.ehlo(helo)
        client.mail(sender)
        client.rcpt(ALICE)
        return client.data(data)


def results_of(body: bytes) -> str:
    """The Authentication-Results: field at the top of the queued message, unfolded."""
    assert body.startswith(AR), body[:200]
    field = body.split(b"\r\n", 1)[0]
    rest = body.split(b"\r\n")[1:]
    for line in rest:
        if not line.startswith((b"\t", b" ")):
            break
        field += b" " + line.strip()
    return field.decode()


def queued_results(ingress: RunningIngress, namespace: str, sender: str, data: bytes, **kw: Any) -> tuple[str, bytes]:
    code, reply = deliver(ingress, sender, data, **kw)
    assert code == 250, reply
    [queued] = read_queue(namespace)
    return results_of(queued.body), queued.body


@pytest.mark.parametrize(
    ("domain", "expected"),
    [
        ("pass.test", "spf=pass smtp.mailfrom=pass.test"),
        ("fail.test", "spf=fail smtp.mailfrom=fail.test"),
        ("soft.test", "spf=softfail smtp.mailfrom=soft.test"),
        ("nothing.test", "spf=none smtp.mailfrom=nothing.test"),
        ("absent.test", "spf=none smtp.mailfrom=absent.test"),
    ],
)
def test_spf_result_of_the_mail_from_is_in_the_header(
    checked: RunningIngress, namespace: str, domain: str, expected: str
) -> None:
    results, _ = queued_results(checked, namespace, f"someone@{domain}", message(domain))
    assert results.startswith(f"Authentication-Results: {HOSTNAME}; ")
    assert expected in results
    assert "spf=pass smtp.helo=client.pass.test" in results
    assert "dkim=none" in results
    assert f"dmarc=none header.from={domain}" in results


def test_dns_that_does_not_answer_is_temperror_and_the_mail_flows(checked: RunningIngress, namespace: str) -> None:
    results, _ = queued_results(checked, namespace, "someone@slow.test", message("slow.test"))
    assert "spf=temperror smtp.mailfrom=slow.test" in results
    assert "dmarc=temperror header.from=slow.test" in results


def test_unreachable_inbound_dns_is_temperror_and_the_mail_flows(
    make_ingress: Callable[..., RunningIngress], accounts: None, namespace: str
) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as hole:  # a bound UDP port that never answers
        hole.bind(("127.0.0.1", 0))
        ingress = make_ingress(
            trusted_networks="",
            inbound_checks=True,
            dns_nameservers=(HostPort("127.0.0.1", hole.getsockname()[1]),),
            inbound_dns_timeout=0.3,
        )
        results, _ = queued_results(ingress, namespace, "someone@pass.test", message("pass.test"))
    assert "spf=temperror smtp.mailfrom=pass.test" in results
    assert "dmarc=temperror" in results


def test_dkim_signature_verifies(checked: RunningIngress, namespace: str, signing_key: SigningKey) -> None:
    signed = signing_key.sign(message("signed.test"))
    # SPF fails for signed.test from here: DMARC (p=reject, adkim=s) passes on the aligned signature alone.
    results, body = queued_results(checked, namespace, "someone@signed.test", signed)
    assert "spf=fail smtp.mailfrom=signed.test" in results
    assert "dkim=pass header.d=signed.test header.s=sel1 header.b=" in results
    assert "dmarc=pass (p=reject dis=none) header.from=signed.test" in results
    assert body.endswith(signed)


def test_altered_body_fails_dkim_and_dmarc_rejects(
    checked: RunningIngress, namespace: str, signing_key: SigningKey
) -> None:
    signed = signing_key.sign(message("signed.test"))
    tampered = signed.replace(b"Hello Alice.", b"Send money.")
    code, reply = deliver(checked, "someone@signed.test", tampered)
    assert (code, reply.decode()) == (550, str(replies.DMARC_REJECTED)[4:])
    assert queue_depth(namespace) == 0


def test_altered_body_is_dkim_fail_in_the_header_when_not_enforced(
    make_ingress: Callable[..., RunningIngress],
    accounts: None,
    inbound_dns: DNSServer,
    namespace: str,
    signing_key: SigningKey,
) -> None:
    ingress = make_ingress(
        trusted_networks="",
        dns_nameservers=(HostPort("127.0.0.1", inbound_dns.port),),
        inbound_checks=True,
        dmarc_enforce=False,
    )
    tampered = signing_key.sign(message("signed.test")).replace(b"Hello Alice.", b"Send money.")
    results, body = queued_results(ingress, namespace, "someone@signed.test", tampered)
    assert "dkim=fail header.d=signed.test" in results
    assert "dmarc=fail (p=reject dis=reject) header.from=signed.test" in results
    assert b"\r\nX-Postroom-DMARC: quarantine\r\n" in body


def test_arc_chain_verifies_and_a_broken_one_fails(
    checked: RunningIngress, namespace: str, signing_key: SigningKey
) -> None:
    sealed = signing_key.arc_seal(message("fail.test"))
    results, _ = queued_results(checked, namespace, "someone@fail.test", sealed)
    assert "arc=pass" in results
    broken = sealed.replace(b"Hello Alice.", b"Send money.")
    results, _ = queued_results(checked, namespace, "someone@fail.test", broken)
    assert "arc=fail" in results


def test_dmarc_reject_is_550_at_the_end_of_data(checked: RunningIngress, namespace: str) -> None:
    code, reply = deliver(checked, "someone@reject.test", message("reject.test"))
    assert code == 550
    assert reply.decode() == str(replies.DMARC_REJECTED)[4:]
    assert queue_depth(namespace) == 0


def test_dmarc_quarantine_adds_the_header(checked: RunningIngress, namespace: str) -> None:
    results, body = queued_results(checked, namespace, "someone@quarantine.test", message("quarantine.test"))
    assert "dmarc=fail (p=quarantine dis=quarantine) header.from=quarantine.test" in results
    assert b"\r\nX-Postroom-DMARC: quarantine\r\n" in body.split(b"\r\n\r\n")[0] + b"\r\n"


def test_forged_results_of_our_authserv_id_are_removed(checked: RunningIngress, namespace: str) -> None:
    forged = (
        f"Authentication-Results: {HOSTNAME.upper()}; spf=pass smtp.mailfrom=fail.test\r\n"
        f"Authentication-Results: (a comment) {HOSTNAME};\r\n\tdkim=pass header.d=fail.test\r\n"
        "Authentication-Results: other.example; spf=pass\r\n"
        "X-Postroom-DMARC: quarantine\r\n"
    )
    results, body = queued_results(checked, namespace, "someone@fail.test", message("fail.test", extra=forged))
    assert "spf=fail smtp.mailfrom=fail.test" in results
    head = body.split(b"\r\n\r\n")[0]
    assert head.count(b"Authentication-Results: ") == 2  # ours and other.example's
    assert b"Authentication-Results: other.example; spf=pass\r\n" in head
    assert b"dkim=pass" not in head
    assert b"X-Postroom-DMARC" not in head
    assert body.endswith(message("fail.test"))


def test_forged_results_are_removed_from_a_message_spooled_to_disk(checked: RunningIngress, namespace: str) -> None:
    forged = f"Authentication-Results: {HOSTNAME}; spf=pass smtp.mailfrom=fail.test\r\n"
    big_body = "".join(f"line {n:07d} of a message spooled to a file\r\n" for n in range(40_000))  # > 1 MiB
    data = message("fail.test", body=big_body, extra=forged)
    results, body = queued_results(checked, namespace, "someone@fail.test", data)
    assert "spf=fail" in results
    assert body.count(HOSTNAME.encode() + b"; spf=pass") == 0
    assert body.endswith(message("fail.test", body=big_body))


def test_authenticated_and_trusted_sessions_are_not_checked(
    make_ingress: Callable[..., RunningIngress], accounts: None, inbound_dns: DNSServer, namespace: str
) -> None:
    nameservers = (HostPort("127.0.0.1", inbound_dns.port),)
    trusted = make_ingress(inbound_checks=True, dns_nameservers=nameservers)  # 127.0.0.0/8 is trusted by default
    code, _ = deliver(trusted, "someone@reject.test", message("reject.test"))
    assert code == 250
    [queued] = read_queue(namespace)
    assert not queued.body.startswith(AR) and AR not in queued.body

    with trusted.smtp("smtps") as client:
        client.login(ALICE, PASSWORD)
        client.sendmail(ALICE, [ALICE], message("local.test"))
    [queued] = read_queue(namespace)
    assert AR not in queued.body


def test_checks_off_add_nothing_and_ask_no_dns(
    make_ingress: Callable[..., RunningIngress], accounts: None, inbound_dns: DNSServer, namespace: str
) -> None:
    ingress = make_ingress(
        trusted_networks="", inbound_checks=False, dns_nameservers=(HostPort("127.0.0.1", inbound_dns.port),)
    )
    code, _ = deliver(ingress, "someone@reject.test", message("reject.test"))
    assert code == 250
    [queued] = read_queue(namespace)
    assert AR not in queued.body
    assert inbound_dns.queries == []


def test_results_are_counted_and_dns_answers_cached(
    checked: RunningIngress, namespace: str, inbound_dns: DNSServer
) -> None:
    def count(method: str, result: str) -> float:
        value = REGISTRY.get_sample_value("postroom_smtp_auth_results_total", {"method": method, "result": result})
        return value or 0.0

    before = count("spf", "softfail"), count("dmarc", "none"), count("dkim", "none")
    for _ in range(3):
        code, _ = deliver(checked, "someone@soft.test", message("soft.test"))
        assert code == 250
    after = count("spf", "softfail"), count("dmarc", "none"), count("dkim", "none")
    assert [a - b for a, b in zip(after, before, strict=True)] == [3, 3, 3]
    assert len(read_queue(namespace, count=3)) == 3
    # The SPF record was asked for once: the next two messages used the cache.
    assert inbound_dns.queries.count(("soft.test", "TXT")) == 1


def test_client_gone_while_dns_is_slow_leaves_no_partial_or_second_copy(
    checked: RunningIngress, namespace: str
) -> None:
    """The worst moment: the client leaves while the checks wait on DNS. Its message went in whole before the dot,
    so it is queued once, whole, with its results (as any message whose client leaves before the reply), or not at
    all; nothing else is hurt."""
    client = smtplib.SMTP("127.0.0.1", checked.port("smtp"), timeout=10)
    client.ehlo("client.pass.test")
    client.mail("someone@slow.test")
    client.rcpt(ALICE)
    client.putcmd("data")
    assert client.getreply()[0] == 354
    client.send(message("slow.test") + b".\r\n")
    client.close()  # before the checks (0.5 s per lookup) are done
    wait_until_sync(lambda: not checked.app.server.registry.sessions, 10, what="session closed")
    code, _ = deliver(checked, "someone@pass.test", message("pass.test"))
    assert code == 250
    queued = read_queue(namespace, count=2, timeout=3)
    slow = [q.body for q in queued if b"smtp.mailfrom=slow.test" in q.body]
    assert len(queued) - len(slow) == 1
    assert len(slow) <= 1
    assert all(body.endswith(message("slow.test")) for body in slow)
