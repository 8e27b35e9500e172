"""services/smtp_ingress/message.py: line ends, the Received and Date fields, headers added at submission."""

from __future__ import annotations

import dataclasses
import math
import time
from datetime import datetime
from email.utils import format_datetime

import pytest

from services.smtp_ingress import message
from services.smtp_ingress.message import (
    ReceivedFacts,
    header_names,
    normalise_line_ends,
    received_header,
    submission_headers,
)


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
