"""PROXY protocol in front of the ingress: only the balancer may connect, a header's address earns no relay trust
unless the operator says so, the per-IP cap counts revealed clients, and port 465 reads the header before TLS."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator

import pytest
from prometheus_client import REGISTRY

from services.smtp_ingress import replies
from shared.envelope import Envelope
from tests.helpers import wait_until_sync
from tests.proxyclients import (
    BALANCER,
    BALANCER_NETWORK,
    OUTSIDER,
    V1_UNKNOWN,
    V2_LOCAL,
    ProxiedSMTP,
    ProxiedSMTP_SSL,
    connect_from,
    proxied_socket,
    read_all,
    read_line,
    v1_header,
    v2_header,
)
from tests.smtp_ingress.conftest import ALICE, PASSWORD, RunningIngress, read_queue, send
from tests.smtp_ingress.rawsmtp import RawSMTP

REMOTE = "someone@remote.example"


@pytest.fixture
def proxied(make_ingress: Callable[..., RunningIngress], accounts: None) -> Callable[..., RunningIngress]:
    """An ingress behind a PROXY-speaking balancer at 127.0.0.2 (setting overrides as keyword arguments)."""

    def make(**overrides: object) -> RunningIngress:
        settings: dict[str, object] = {
            "smtp_proxy_protocol": True,
            "proxy_trusted_networks": BALANCER_NETWORK,
            "smtp_proxy_protocol_timeout": 3.0,
        }
        return make_ingress(**{**settings, **overrides})

    return make


def dropped(listener: str, reason: str) -> float:
    labels = {"listener": listener, "reason": reason}
    return REGISTRY.get_sample_value("postroom_smtp_proxy_dropped_total", labels) or 0.0


def relay_reply(raw: RawSMTP) -> str:
    """The reply to a RCPT for a remote domain, after the greeting (which must come)."""
    greeting = raw.reply()
    assert greeting.startswith("220 "), greeting
    raw.command("EHLO client.example.org")
    assert raw.command("MAIL FROM:<sender@remote.example>") == str(replies.SENDER_OK)
    return raw.command(f"RCPT TO:<{REMOTE}>")


def test_a_peer_outside_the_balancer_networks_is_dropped_with_or_without_a_header(
    proxied: Callable[..., RunningIngress],
) -> None:
    ingress = proxied()
    before = dropped("smtp", "untrusted")
    # The very attack: claim to be 127.0.0.1 (a trusted network) and relay.
    for opening in (v1_header("127.0.0.1"), v2_header("127.0.0.1"), b"EHLO outsider.example\r\n", b""):
        with connect_from(OUTSIDER, ingress.port("smtp")) as sock:
            if opening:
                sock.sendall(opening)
            assert read_all(sock) == b""  # closed without a greeting
    for listener in ("submission", "smtps"):
        with connect_from(OUTSIDER, ingress.port(listener)) as sock:
            sock.sendall(v1_header("203.0.113.7"))
            assert read_all(sock) == b""
    assert dropped("smtp", "untrusted") == before + 4


def test_a_header_address_never_makes_a_client_trusted_for_relay(proxied: Callable[..., RunningIngress]) -> None:
    # 127.0.0.0/8 is in POSTROOM_TRUSTED_NETWORKS (the default), the balancer's own address included.
    ingress = proxied()
    for header in (v1_header("127.0.0.1"), v2_header("127.0.0.1"), V2_LOCAL, V1_UNKNOWN):
        with RawSMTP(ingress.port("smtp"), source=BALANCER, header=header) as raw:
            assert relay_reply(raw) == str(replies.RELAY_DENIED), header
            assert raw.command(f"RCPT TO:<{ALICE}>") == str(replies.RECIPIENT_OK)  # local mail still flows


def test_the_operator_may_let_header_addresses_earn_relay_trust(proxied: Callable[..., RunningIngress]) -> None:
    ingress = proxied(proxy_trust_client_networks=True)
    with RawSMTP(ingress.port("smtp"), source=BALANCER, header=v1_header("127.0.0.1")) as raw:
        assert relay_reply(raw) == str(replies.RECIPIENT_OK)
    for header in (v2_header("203.0.113.7"), V2_LOCAL, V1_UNKNOWN):
        with RawSMTP(ingress.port("smtp"), source=BALANCER, header=header) as raw:
            assert relay_reply(raw) == str(replies.RELAY_DENIED), header


def test_the_revealed_client_is_the_one_recorded(proxied: Callable[..., RunningIngress], namespace: str) -> None:
    ingress = proxied()
    with ProxiedSMTP(v2_header("192.0.2.9"), ingress.port("smtp")) as client:
        client.ehlo("client.example.org")
        code, _ = send(client, "sender@remote.example", [ALICE], b"Subject: x\r\n\r\nbody\r\n")
    assert code == 250
    [message] = read_queue(namespace)
    assert message.body.startswith(b"Received: from client.example.org ([192.0.2.9])")
    assert Envelope.from_headers(message.headers).client_address == "192.0.2.9"


def test_commands_behind_the_header_in_the_same_segment_are_kept(proxied: Callable[..., RunningIngress]) -> None:
    ingress = proxied()
    with RawSMTP(ingress.port("smtp"), source=BALANCER, header=v1_header("198.51.100.4") + b"NOOP\r\n") as raw:
        assert raw.reply().startswith("220 ")
        assert raw.reply() == str(replies.OK)


def test_a_missing_or_bad_header_from_the_balancer_is_dropped(proxied: Callable[..., RunningIngress]) -> None:
    ingress = proxied()
    before = dropped("smtp", "header")
    openings = (
        b"EHLO no-header.example\r\n",
        b"PROXY TCP4 not-an-ip 127.0.0.1 1 2\r\n",
        b"PROXY " + b"x" * 300 + b"\r\n",
        b"",  # nothing at all: dropped at the header timeout
    )
    for opening in openings:
        with connect_from(BALANCER, ingress.port("smtp")) as sock:
            if opening:
                sock.sendall(opening)
            assert read_all(sock) == b"", opening
    assert dropped("smtp", "header") == before + len(openings)


@pytest.fixture
def sockets() -> Iterator[list[socket.socket]]:
    opened: list[socket.socket] = []
    yield opened
    for sock in opened:
        sock.close()


def open_burst(ingress: RunningIngress, count: int, into: list[socket.socket]) -> None:
    """`count` connections from the balancer, all accepted (and waiting for their headers) before any is sent."""
    limiter = ingress.app.server.registry.limiter
    for _ in range(count):
        into.append(connect_from(BALANCER, ingress.port("smtp")))
    wait_until_sync(lambda: limiter.open == count, what=f"{count} connections waiting for their headers")


def greetings(sockets: list[socket.socket], clients: list[str]) -> list[str]:
    for sock, client in zip(sockets, clients, strict=True):
        sock.sendall(v1_header(client))
    return [read_line(sock).decode().rstrip("\r\n") for sock in sockets]


def test_the_per_ip_cap_counts_revealed_clients_also_for_a_burst(
    proxied: Callable[..., RunningIngress], sockets: list[socket.socket]
) -> None:
    # The balancer is not in POSTROOM_TRUSTED_NETWORKS, so nothing exempts its own address from the cap.
    ingress = proxied(trusted_networks="192.0.2.0/24", smtp_max_connections_per_ip=20)
    limiter = ingress.app.server.registry.limiter
    open_burst(ingress, 21, sockets)
    answers = greetings(sockets, [f"203.0.113.{i}" for i in range(1, 22)])
    assert all(answer.startswith("220 ") for answer in answers), answers
    for sock in sockets:
        sock.close()
    sockets.clear()
    wait_until_sync(lambda: limiter.open == 0, what="the first burst's sessions closed")

    open_burst(ingress, 21, sockets)
    answers = greetings(sockets, ["203.0.113.99"] * 21)
    assert sorted(answer[:3] for answer in answers) == ["220"] * 20 + ["421"]
    assert str(replies.TOO_MANY_CONNECTIONS_FROM_IP) in answers


def test_connections_waiting_for_a_header_are_bounded_by_the_global_cap(
    proxied: Callable[..., RunningIngress], sockets: list[socket.socket]
) -> None:
    ingress = proxied(smtp_max_connections=3)
    before = dropped("smtp", "limit")
    open_burst(ingress, 3, sockets)
    with connect_from(BALANCER, ingress.port("smtp")) as fourth:
        fourth.sendall(v1_header("203.0.113.50"))
        assert read_all(fourth) == b""
    assert dropped("smtp", "limit") == before + 1
    answers = greetings(sockets, ["203.0.113.1", "203.0.113.2", "203.0.113.3"])
    assert all(answer.startswith("220 ") for answer in answers), answers


@pytest.mark.parametrize("header", [v1_header("198.51.100.9", 465), v2_header("198.51.100.9", 465)], ids=["v1", "v2"])
def test_implicit_tls_behind_the_balancer_reads_the_header_before_the_handshake(
    proxied: Callable[..., RunningIngress], namespace: str, header: bytes
) -> None:
    ingress = proxied()
    with ProxiedSMTP_SSL(header, ingress.port("smtps")) as client:
        client.ehlo("laptop.example.org")
        client.login(ALICE, PASSWORD)
        code, reply = send(client, ALICE, [REMOTE], b"Subject: over 465\r\n\r\nbody\r\n")
    assert code == 250, reply
    [message] = read_queue(namespace)
    envelope = Envelope.from_headers(message.headers)
    assert envelope.client_address == "198.51.100.9" and envelope.recipients == (REMOTE,)
    assert b"([198.51.100.9])" in message.body.split(b"\r\n\r\n", 1)[0]


def test_a_failed_handshake_after_the_header_is_dropped(proxied: Callable[..., RunningIngress]) -> None:
    ingress = proxied()
    before = dropped("smtps", "tls")
    with proxied_socket(ingress.port("smtps"), v1_header("198.51.100.9", 465) + b"EHLO not-tls\r\n") as sock:
        assert read_all(sock) == b""
    wait_until_sync(lambda: dropped("smtps", "tls") == before + 1, what="the failed handshake counted")
