"""Units of the inbound checks: DMARC records and alignment, the header block, the library seams we ride."""

from __future__ import annotations

import inspect

import dkim
import pytest
import spf as pyspf

from services.smtp_ingress.inbound import dmarc, header
from services.smtp_ingress.inbound import spf as our_spf
from services.smtp_ingress.inbound.dns import DnsFailure


def test_dmarc_record_tags() -> None:
    record = dmarc.parse_record("v=DMARC1; p=reject; sp=none; adkim=s; pct=50; rua=mailto:x@y", subdomain=False)
    assert record == dmarc.Record("reject", strict_dkim=True, strict_spf=False, percent=50)
    assert dmarc.parse_record("v=DMARC1; p=reject; sp=none", subdomain=True) == dmarc.Record("none", False, False, 100)
    assert dmarc.parse_record("v=DMARC1; p=bogus; rua=mailto:a@b", subdomain=False) == dmarc.Record(
        "none", False, False, 100
    )
    assert dmarc.parse_record("v=DMARC1; p=bogus", subdomain=False) is None
    assert dmarc.parse_record("p=reject; v=DMARC1", subdomain=False) is None
    assert dmarc.parse_record("v=spf1 -all", subdomain=False) is None


def test_alignment_relaxed_uses_the_organisational_domain() -> None:
    assert dmarc.organisational_domain("mail.example.co.uk") == "example.co.uk"
    assert dmarc.aligned("bounce.example.com", "example.com", strict=False)
    assert not dmarc.aligned("bounce.example.com", "example.com", strict=True)
    assert dmarc.aligned("EXAMPLE.com.", "example.com", strict=True)
    assert not dmarc.aligned("example.co.uk", "other.co.uk", strict=False)


async def test_dmarc_falls_back_to_the_organisational_record_and_its_sp() -> None:
    asked: list[str] = []

    async def txt(name: str) -> tuple[list[str], float]:
        asked.append(name)
        return (["v=DMARC1; p=reject; sp=quarantine"] if name == "_dmarc.example.com" else []), 60.0

    verdict = await dmarc.evaluate(txt, "news.example.com", ("fail", "news.example.com"), [])
    assert verdict == dmarc.Verdict("fail", "quarantine", "quarantine")
    assert asked == ["_dmarc.news.example.com", "_dmarc.example.com"]
    passed = await dmarc.evaluate(txt, "news.example.com", ("pass", "bounce.example.com"), [])
    assert passed.result == "pass"
    by_dkim = await dmarc.evaluate(txt, "news.example.com", None, ["example.com"])
    assert by_dkim.result == "pass"


async def test_dmarc_pct_sends_the_rest_one_policy_down() -> None:
    async def txt(name: str) -> tuple[list[str], float]:
        return ["v=DMARC1; p=reject; pct=10"], 60.0

    sampled = await dmarc.evaluate(txt, "example.com", None, [], sample=lambda: 0.05)
    assert sampled.disposition == "reject"
    spared = await dmarc.evaluate(txt, "example.com", None, [], sample=lambda: 0.5)
    assert spared.disposition == "quarantine"


async def test_dmarc_dns_failure_is_temperror_and_two_records_are_none() -> None:
    async def failing(name: str) -> tuple[list[str], float]:
        raise DnsFailure("timeout")

    assert (await dmarc.evaluate(failing, "example.com", None, [])).result == "temperror"

    async def two(name: str) -> tuple[list[str], float]:
        return ["v=DMARC1; p=reject", "v=DMARC1; p=none"], 60.0

    assert (await dmarc.evaluate(two, "example.com", None, [])).result == "none"
    assert (await dmarc.evaluate(two, None, None, [])).result == "permerror"


def test_head_from_domain_needs_exactly_one_address() -> None:
    def domain(head: bytes) -> str | None:
        return header.read_head(head + b"\r\nbody\r\n", "mx.test").from_domain

    assert domain(b"From: A <a@Example.COM>\r\n") == "example.com"
    assert domain(b"From:\r\n a@example.com\r\n") == "example.com"
    assert domain(b"From: a@example.com\r\nFrom: b@other.com\r\n") is None
    assert domain(b"From: a@example.com, b@other.com\r\n") is None
    assert domain(b"To: a@example.com\r\n") is None
    assert domain(b'From: "x" <a@exa"mple.com>\r\n') is None


def test_forged_results_are_matched_by_authserv_id_only() -> None:
    head = (
        b"Authentication-Results: (c) MX.test (v) 1; spf=pass\r\n"
        b"Authentication-Results: mx.test.evil; spf=pass\r\n"
        b"Authentication-Results: mx.test;\r\n\tdkim=pass\r\n"
        b"Subject: x\r\n"
    )
    facts = header.read_head(head + b"\r\nbody\r\n", "mx.test")
    assert facts.cleaned == b"Authentication-Results: mx.test.evil; spf=pass\r\nSubject: x\r\n"
    assert facts.head_length == len(head)
    assert header.read_head(b"Subject: x\r\n\r\nb", "mx.test").cleaned is None


def test_results_header_is_folded_per_result() -> None:
    text = header.results_header("mx.test", ["spf=pass smtp.mailfrom=a.test", "dkim=none"])
    assert text == b"Authentication-Results: mx.test;\r\n\tspf=pass smtp.mailfrom=a.test;\r\n\tdkim=none\r\n"
    assert header.safe_domain("a.test") == "a.test"
    assert header.safe_domain("a;b.test") is None
    assert header.safe_domain("a..test") is None


def test_pyspf_still_resolves_through_its_module_global() -> None:
    """Our DNS reaches pyspf through `spf.DNSLookup`, which `spf.query.dns` calls; a release moving it fails here."""
    assert pyspf.DNSLookup is our_spf._lookup
    assert "DNSLookup(" in inspect.getsource(pyspf.query.dns)


def test_dkimpy_takes_our_dnsfunc_and_lets_its_errors_through() -> None:
    """dkimpy calls `dnsfunc(name, timeout=…)` and does not catch our DnsFailure (which makes a temperror)."""
    assert "dnsfunc(name, timeout=timeout)" in inspect.getsource(dkim.load_pk_from_dns)
    assert not issubclass(DnsFailure, dkim.DKIMException)


@pytest.mark.parametrize("result", ["pass", "fail", "softfail", "neutral", "none", "permerror", "temperror"])
def test_every_spf_result_is_a_metric_label(result: str) -> None:
    assert result in our_spf.RESULTS
