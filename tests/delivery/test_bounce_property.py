"""The DSN composer is total: any text in the outcomes, envelope and settings gives a valid RFC 3464 report."""

from __future__ import annotations

import email
import re
from email.message import Message

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.delivery import bounce
from services.delivery.outcome import RecipientOutcome, Status
from shared.envelope import Envelope
from shared.queue_id import new_queue_id

# Every code point, lone surrogates and control characters included (hypothesis leaves surrogates out by default).
ANY_CHAR = st.characters(codec=None, categories=None, exclude_categories=())
ANY_TEXT = st.text(ANY_CHAR, max_size=300)
# A reply as aiosmtplib hands it over: the raw bytes decoded as UTF-8 with surrogateescape.
WIRE_TEXT = st.binary(max_size=600).map(lambda raw: raw.decode("utf-8", "surrogateescape"))
TEXT = st.one_of(ANY_TEXT, WIRE_TEXT, st.text(max_size=3000))
STATUS = re.compile(r"^[245]\.\d{1,3}\.\d{1,3}$")

outcomes = st.builds(
    RecipientOutcome,
    recipient=TEXT,
    status=st.sampled_from([Status.TEMPORARY, Status.PERMANENT]),
    enhanced=st.one_of(st.sampled_from(["5.1.1", "4.4.7", "5.0.0", "4.2.2"]), TEXT),
    diagnostic=TEXT,
    transport=st.sampled_from(["local", "smtp"]),
    remote_mta=TEXT,
    original=TEXT,
)
envelopes = st.builds(
    Envelope,
    queue_id=st.one_of(st.just(new_queue_id()), TEXT),
    mail_from=TEXT,
    recipients=st.just(("someone@example.test",)),
    first_seen=st.floats(allow_nan=True, allow_infinity=True),
    attempt=st.integers(min_value=0, max_value=10**6),
)


def check_report(report: bytes, failed: list[RecipientOutcome], action: str) -> None:
    # CRLF line ends only, no line over 998 octets (RFC 5322 §2.1.1, §2.3).
    assert b"\r" not in report.replace(b"\r\n", b"") and b"\n" not in report.replace(b"\r\n", b"")
    assert max(len(line) for line in report.split(b"\r\n")) <= 998
    message = email.message_from_bytes(report)
    assert not message.defects
    assert message.get_content_type() == "multipart/report"
    assert message.get_param("report-type") == "delivery-status"
    assert str(message["From"]).startswith("Mail Delivery System <MAILER-DAEMON@")
    parts = [p for p in message.get_payload() if isinstance(p, Message)]
    assert [p.get_content_type() for p in parts] == ["text/plain", "message/delivery-status", "text/rfc822-headers"]
    # The machine-readable part is US-ASCII, as RFC 3464's field syntax wants (non-ASCII as RFC 6533 \x{HEX}).
    boundary = message.get_boundary()
    assert boundary is not None and len(boundary) <= 70
    status_part = report.split(f"--{boundary}".encode())[2]
    assert status_part.isascii()
    groups = parts[1].get_payload()
    assert isinstance(groups, list)
    per_message, *per_recipient = (g for g in groups if isinstance(g, Message))
    assert per_message["Reporting-MTA"].startswith("dns; ")
    assert len(per_recipient) == len(failed)
    for group in per_recipient:
        assert group["Final-Recipient"].split(";")[0] in ("rfc822", "utf-8")
        assert group["Action"] == action
        assert STATUS.match(group["Status"]) and group["Status"][0] == ("5" if action == "failed" else "4")
        assert group["Diagnostic-Code"]
        assert group["Last-Attempt-Date"]


@settings(max_examples=300, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(
    envelope=envelopes,
    message=st.one_of(st.binary(max_size=3000), st.just(b"Subject: x\r\n\r\nbody\r\n")),
    failed=st.lists(outcomes, min_size=1, max_size=4),
    hostname=st.one_of(st.just("mx.postroom.test"), TEXT),
    now=st.floats(allow_nan=True, allow_infinity=True),
    action=st.sampled_from(["failed", "delayed"]),
)
def test_any_text_in_a_valid_report_out(
    envelope: Envelope, message: bytes, failed: list[RecipientOutcome], hostname: str, now: float, action: str
) -> None:
    report, report_envelope = bounce.compose(envelope, message, failed, hostname, now, action)
    check_report(report, failed, action)
    # The report's envelope can be published: every header value encodes.
    for value in report_envelope.to_headers().values():
        for item in value if isinstance(value, list) else [value]:
            str(item).encode()
    assert report_envelope.mail_from == ""
    assert ("BODY=8BITMIME" in report_envelope.esmtp) == (not report.isascii())


def test_a_latin1_reply_is_quoted_readably() -> None:
    """`550 5.1.1 M\\xfcller unknown` in raw Latin-1, as aiosmtplib hands it over: Müller in the human part, the
    RFC 6533 escape in the delivery-status part."""
    wire = b"550 5.1.1 M\xfcller unknown".decode("utf-8", "surrogateescape")
    envelope = Envelope(new_queue_id(), "sender@origin.test", ("mueller@remote.test",))
    failed = [RecipientOutcome("mueller@remote.test", Status.PERMANENT, "5.1.1", wire, "smtp", "mx.remote.test")]
    report, _ = bounce.compose(envelope, b"Subject: hi\r\n\r\n", failed, "mx.postroom.test")
    check_report(report, failed, "failed")
    assert "<mueller@remote.test>: 550 5.1.1 Müller unknown".encode() in report
    assert b"Diagnostic-Code: smtp; 550 5.1.1 M\\x{FC}ller unknown" in report
