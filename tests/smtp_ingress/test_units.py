"""Unit tests of the pure parts: line-end normalisation, headers, address checks, limits."""

from __future__ import annotations

import dataclasses
import itertools
import math
import time
from datetime import datetime
from email.utils import format_datetime

import pytest

from services.smtp_ingress import message, policy, replies
from services.smtp_ingress.auth import decode_initial_response, parse_plain
from services.smtp_ingress.config import IngressSettings
from services.smtp_ingress.message import (
    ReceivedFacts,
    header_names,
    normalise_line_ends,
    received_header,
    submission_headers,
)
from services.smtp_ingress.policy import check_address, client_ip, is_trusted, valid_helo
from shared.errors import ConfigError
from shared.settings import load_settings


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"a\r\nb\r\n", b"a\r\nb\r\n"),
        (b"a\nb\n", b"a\r\nb\r\n"),
        (b"a\rb\r", b"a\r\nb\r\n"),
        (b"a\r\r\nb\n\r", b"a\r\n\r\nb\r\n\r\n"),
        (b"x\n.\ny", b"x\r\n.\r\ny"),
    ],
)
def test_normalise_line_ends(data: bytes, expected: bytes) -> None:
    assert normalise_line_ends(data) == expected


def test_received_header_shape() -> None:
    facts = ReceivedFacts(
        hostname="mx.postroom.test",
        queue_id="01ABCDEFGHJKMNPQRSTVWXYZ00",
        client_ip="2001:db8::1",
        helo="client.example",
        esmtp=True,
        tls_version="TLSv1.3",
        tls_cipher="TLS_AES_256_GCM_SHA384",
        auth_user="alice@local.test",
        recipient="bob@remote.example",
        when=0,
    )
    header = received_header(facts).decode()
    assert header.startswith("Received: from client.example ([IPv6:2001:db8::1])\r\n")
    assert "\t(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384)\r\n" in header
    assert "with ESMTPSA id 01ABCDEFGHJKMNPQRSTVWXYZ00\r\n\tfor <bob@remote.example>;\r\n" in header
    assert header.endswith("\r\n") and all(len(line) < 998 for line in header.split("\r\n"))
    # Authenticated but not named (POSTROOM_SMTP_RECEIVED_AUTH off): ESMTPSA, no account anywhere.
    unnamed = received_header(dataclasses.replace(facts, auth_user=None, authenticated=True)).decode()
    assert "with ESMTPSA id" in unnamed and "alice" not in unnamed and "authenticated sender" not in unnamed


def test_date_formatted_once_a_second_reads_as_before() -> None:
    now = time.time()
    moments = [0.0, 0.5, 1.0, 59.9999994, 59.9999995, 59.9999996, 59.999999, 60.0, -0.5, -1.0, -1.0000004]
    moments += [now, now + 0.3, math.floor(now) + 0.9999996, math.floor(now) + 0.9999994, 1e9 + 0.123456789]
    for when in moments + moments[::-1]:  # both orders: a cached second must never answer for another one
        assert message._rfc5322_date(when) == format_datetime(datetime.fromtimestamp(when).astimezone()), when


def test_submission_headers_added_only_when_missing() -> None:
    assert header_names(b"Subject: a\r\n b\r\nFrom: x\r\n\r\nDate: body\r\n") == {"subject", "from"}
    added = submission_headers(b"Subject: a\r\n\r\nbody\r\n", "QID", "mx.example", when=0).decode()
    assert added.startswith("Message-ID: <QID@mx.example>\r\nDate: ")
    assert submission_headers(b"Message-ID: <a@b>\r\nDate: x\r\n\r\n", "QID", "mx") == b""


@pytest.mark.parametrize(
    ("address", "sender", "expected"),
    [
        ("<>", True, None),
        ("user@example.com", False, None),
        ("user@[192.0.2.1]", False, None),
        ("user@[IPv6:2001:db8::1]", False, None),
        ("user@[999.1.1.1]", False, replies.BAD_RECIPIENT_SYNTAX),
        ("user@-bad.example", True, replies.BAD_SENDER_SYNTAX),
        ("us\ter@example.com", False, replies.CONTROL_CHARACTERS),
        ("us\udcffer@example.com", False, replies.CONTROL_CHARACTERS),
        ("a" * 65 + "@example.com", False, replies.ADDRESS_TOO_LONG),
        ('"x@y"@example.com', False, replies.QUOTED_LOCAL_PART),
        ("jürgen@example.com", False, replies.NON_ASCII_WITHOUT_SMTPUTF8),
    ],
)
def test_check_address(address: str, sender: bool, expected: replies.Reply | None) -> None:
    assert check_address(address, sender=sender, smtputf8=False) == expected


def test_client_ip_and_trust() -> None:
    settings = load_settings(IngressSettings, trusted_networks="10.0.0.0/8, ::1/128")
    assert client_ip(("::ffff:10.1.2.3", 25, 0, 0)) == "10.1.2.3"
    assert is_trusted("10.1.2.3", settings.trusted_networks)
    assert is_trusted("::1", settings.trusted_networks)
    assert not is_trusted("127.0.0.1", settings.trusted_networks)
    assert load_settings(IngressSettings, trusted_networks="").trusted_networks == ()


def test_bad_settings_name_the_variable() -> None:
    with pytest.raises(ConfigError, match="POSTROOM_TRUSTED_NETWORKS"):
        load_settings(IngressSettings, trusted_networks="10.0.0.300/8")
    with pytest.raises(ConfigError, match="POSTROOM_SMTP_LISTEN"):
        load_settings(IngressSettings, smtp_listen="nowhere")
    assert load_settings(IngressSettings, smtps_listen="").smtps_listen is None
    assert load_settings(IngressSettings, smtp_command_timeout="5m").smtp_command_timeout == 300


def test_domain_fast_path_agrees_with_the_label_check() -> None:
    labels = ["a", "A9", "-a", "a-", "a-b", "x" * 63, "x" * 64, "", "ü", "xn--bcher-kva", "a_b", "1", "a\n", " a"]
    domains = [".".join(parts) for parts in itertools.product(labels, repeat=2)] + labels
    domains += [d + "." for d in domains] + [d + ".." for d in labels] + ["[192.0.2.1]", "[IPv6:::1]", "[x]"]
    domains += [".".join(["a" * 63] * 4), ".".join(["a"] * 200), "-", ".", ""]
    for domain in domains:
        assert policy.valid_domain(domain) == policy._valid_domain(domain), repr(domain)


def test_helo_names() -> None:
    assert valid_helo("mail.example.org") and valid_helo("MY_PC") and valid_helo("[192.0.2.1]")
    assert not valid_helo("evil)(x") and not valid_helo("a b") and not valid_helo("bücher.example")


def test_plain_parsing() -> None:
    assert decode_initial_response("=") == b""
    assert decode_initial_response("!!") is None
    assert parse_plain(b"\x00alice@local.test\x00pw") == ("alice@local.test", "pw")
    assert parse_plain(b"alice@local.test\x00alice@local.test\x00pw") == ("alice@local.test", "pw")
    assert parse_plain(b"bob@local.test\x00alice@local.test\x00pw") is None
    assert parse_plain(b"\x00\x00pw") is None
