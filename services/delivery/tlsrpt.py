"""SMTP TLS Reporting (RFC 8460): count each session under a TLS policy, and send each policy domain a daily report.

Every delivery replica counts sessions to domains with a DANE or MTA-STS policy (success, or the result type of a
failure) in memory and adds them to the day's counters in the store every `FLUSH_INTERVAL` (a replica killed in
between loses at most that many seconds of counts: reports are statistics, not mail). Once a day, the first replica
to claim the day (a SET NX in the store) composes yesterday's report for each domain with a `_smtp._tls` TXT
record (`v=TLSRPTv1; rua=mailto:...`) and queues it as a message to the `mailto:` addresses, gzipped JSON in a
multipart/report (§5.3), through the same queue as any other mail. `https:` rua addresses are not posted to.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import gzip
import json
import time
from collections import Counter
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any, Protocol

from services.delivery.mx import MailResolver
from services.store import Store
from shared.envelope import Envelope
from shared.errors import PostroomError
from shared.logging import get_logger
from shared.queue_id import new_queue_id

log = get_logger(__name__)

FLUSH_INTERVAL = 30.0
_FAILURE_TYPES = (
    "starttls-not-supported",
    "certificate-host-mismatch",
    "certificate-expired",
    "certificate-not-trusted",
    "validation-failure",
    "tlsa-invalid",
    "sts-policy-fetch-error",
    "sts-webpki-invalid",
)


class Enqueue(Protocol):
    async def __call__(self, body: bytes, envelope: Envelope) -> None: ...


def utc_day(timestamp: float) -> str:
    return datetime.datetime.fromtimestamp(timestamp, datetime.UTC).strftime("%Y-%m-%d")


class TlsResults:
    """Session results of this replica not yet added to the store's counters."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._pending: Counter[tuple[str, str, str]] = Counter()

    def add(self, domain: str, policy: str, result: str) -> None:
        self._pending[(utc_day(time.time()), domain.lower(), f"{policy}:{result}")] += 1

    async def flush(self) -> None:
        pending, self._pending = self._pending, Counter()
        try:
            for (day, domain, field), count in pending.items():
                await self.store.tls_policies.count(day, domain, field, count)
        except Exception as exc:
            log.warning("tls-rpt counters not written", error=f"{type(exc).__name__}: {exc}")

    async def run(self, stop: asyncio.Event) -> None:
        """Flush every FLUSH_INTERVAL until `stop`, then once more."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), FLUSH_INTERVAL)
            await self.flush()


def rua_addresses(records: list[str]) -> list[str]:
    """The `mailto:` addresses of the one `v=TLSRPTv1` record (RFC 8460 §3); [] when there is none or several."""
    found = [r.strip() for r in records if r.strip().lower().startswith("v=tlsrptv1")]
    if len(found) != 1:
        return []
    addresses: list[str] = []
    for part in found[0].split(";"):
        key, _, value = part.strip().partition("=")
        if key.strip().lower() == "rua":
            for uri in value.split(","):
                uri = uri.strip()
                if uri.lower().startswith("mailto:") and "@" in uri:
                    addresses.append(uri[len("mailto:") :].split("!")[0])
    return addresses


def compose_report(organization: str, contact: str, day: str, domain: str, counts: dict[str, int]) -> dict[str, Any]:
    """The JSON report of one policy domain for one UTC day (RFC 8460 §4)."""
    start = datetime.datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=datetime.UTC)
    end = start + datetime.timedelta(days=1) - datetime.timedelta(seconds=1)
    policies = []
    for policy, policy_type in (("mta-sts", "sts"), ("dane", "tlsa")):
        success = counts.get(f"{policy}:success", 0)
        failures = {t: counts[f"{policy}:{t}"] for t in _FAILURE_TYPES if counts.get(f"{policy}:{t}")}
        if not success and not failures:
            continue
        policies.append(
            {
                "policy": {"policy-type": policy_type, "policy-domain": domain},
                "summary": {
                    "total-successful-session-count": success,
                    "total-failure-session-count": sum(failures.values()),
                },
                "failure-details": [
                    {"result-type": result, "failed-session-count": count} for result, count in failures.items()
                ],
            }
        )
    return {
        "organization-name": organization,
        "date-range": {
            "start-datetime": start.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "end-datetime": end.strftime("%Y-%m-%dT%H:%M:%SZ"),
        },
        "contact-info": contact,
        "report-id": f"{day}_{domain}@{organization}",
        "policies": policies,
    }


def report_message(report: dict[str, Any], sender: str, recipients: list[str], domain: str) -> bytes:
    """The report as mail (RFC 8460 §5.3): multipart/report; report-type="tlsrpt", the JSON gzipped."""
    message = EmailMessage()
    message["From"] = sender
    message["To"] = ", ".join(recipients)
    message["Subject"] = (
        f"Report Domain: {domain} Submitter: {report['organization-name']} Report-ID: <{report['report-id']}>"
    )
    message["Date"] = formatdate(usegmt=True)
    message["Message-ID"] = make_msgid(domain=report["organization-name"])
    message["TLS-Report-Domain"] = domain
    message["TLS-Report-Submitter"] = report["organization-name"]
    message.set_content(f"This is an aggregate TLS report for {domain} from {report['organization-name']}.\n")
    payload = gzip.compress(json.dumps(report, indent=1).encode())
    name = f"{report['organization-name']}!{domain}!{report['date-range']['start-datetime'][:10]}.json.gz"
    message.add_attachment(payload, maintype="application", subtype="tlsrpt+gzip", filename=name)
    message.replace_header("Content-Type", message.get_content_type())
    message.set_param("report-type", "tlsrpt")
    message.set_type("multipart/report")
    return message.as_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


class TlsReporter:
    """Sends each day's reports once, from whichever replica claims the day first."""

    def __init__(self, store: Store, resolver: MailResolver, enqueue: Enqueue, hostname: str, owner: str) -> None:
        self.store = store
        self.resolver = resolver
        self.enqueue = enqueue
        self.hostname = hostname
        self.owner = owner

    async def send(self, day: str) -> int:
        """Queue the reports of `day` unless another replica did; the number queued."""
        days = await self.store.tls_policies.day(day)
        if not days or not await self.store.tls_policies.claim_report(day, self.owner):
            return 0
        sender = f"postmaster@{self.hostname}"
        sent = 0
        for domain, counts in days.items():
            try:
                recipients = rua_addresses(await self.resolver.txt(f"_smtp._tls.{domain}"))
            except PostroomError:
                continue
            if not recipients:
                continue
            report = compose_report(self.hostname, f"mailto:{sender}", day, domain, counts)
            if not report["policies"]:
                continue
            body = report_message(report, sender, recipients, domain)
            await self.enqueue(body, Envelope(new_queue_id(), sender, tuple(recipients)))
            sent += 1
            log.info("tls-rpt report queued", domain=domain, day=day, recipients=len(recipients))
        return sent

    async def run(self, stop: asyncio.Event, interval: float = 3600.0) -> None:
        """Every `interval`, send yesterday's reports (a no-op once sent)."""
        while not stop.is_set():
            try:
                await self.send(utc_day(time.time() - 86400))
            except Exception as exc:
                log.warning("tls-rpt reports not sent", error=f"{type(exc).__name__}: {exc}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)
