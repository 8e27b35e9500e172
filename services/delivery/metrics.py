"""Prometheus metrics of the delivery service (bounded labels only: never an address or a queue id)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from services.store.outage import REASONS
from shared.series import create_series

ATTEMPTS = Counter(
    "postroom_delivery_attempts_total",
    "Delivery attempts per final recipient, by transport (local, smtp), outcome and status class (2, 4, 5).",
    ["transport", "outcome", "status_class"],
)
DELAY = Histogram(
    "postroom_delivery_delay_seconds",
    "Time from acceptance by the ingress to the final outcome of a recipient (delivered or bounced).",
    ["outcome"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600, 86400, 5 * 86400),
)
QUEUE_DEPTH = Gauge(
    "postroom_delivery_queue_depth_messages",
    "Messages ready in each queue (incoming, delay.<seconds>s, dead), polled with a passive declare.",
    ["queue"],
)
MESSAGES = Counter(
    "postroom_delivery_messages_total",
    "Queue messages handled, by result (done, deferred, requeued, dead_lettered).",
    ["result"],
)
IN_FLIGHT = Gauge("postroom_delivery_in_flight_messages", "Queue messages being worked on now.")
DNS_LOOKUPS = Counter(
    "postroom_delivery_dns_lookups_total",
    "DNS lookups for mail routing, by record type and result (ok, nxdomain, nodata, null_mx, servfail, timeout).",
    ["rtype", "result"],
)
BOUNCES = Counter("postroom_delivery_bounces_total", "Bounce messages (RFC 3464 reports) published.")
DELAY_NOTICES = Counter("postroom_delivery_delay_notices_total", "Delay notices (Action: delayed) published.")
SUCCESS_NOTICES = Counter(
    "postroom_delivery_success_notices_total",
    "Success notices (NOTIFY=SUCCESS, RFC 3461) published, by action (delivered, relayed).",
    ["action"],
)
BOUNCES_SUPPRESSED = Counter(
    "postroom_delivery_bounces_suppressed_total", "Failed null-sender messages, never bounced (no bounce loops)."
)
DEAD_LETTERS = Counter(
    "postroom_delivery_dead_letters_total", "Messages this worker rejected to the dead queue, by reason.", ["reason"]
)
WAITING_BODY_BYTES = Gauge(
    "postroom_delivery_waiting_body_bytes",
    "Bytes of large message bodies (over 1 MiB) held in memory while they wait for a worker.",
)
SPOOLED = Gauge("postroom_delivery_spooled_messages", "Large messages waiting for a worker in a spool file.")
SPILLS = Counter(
    "postroom_delivery_spilled_messages_total",
    "Large messages written to a spool file on arrival because the memory budget for waiting bodies was used up.",
)
CONSUMER_UP = Gauge("postroom_delivery_consumer_up", "1 while the queue consumer is running.")
STORE_ERRORS = Counter(
    "postroom_delivery_store_errors_total",
    "Recipients deferred because Redis was unreachable or refused (readonly, oom, noreplicas, masterdown, loading, "
    "misconf, cluster, connection, timeout).",
    ["reason"],
)
INTERNAL_ERRORS = Counter(
    "postroom_delivery_internal_errors_total",
    "Unexpected exceptions while delivering a queue message; its unsettled recipients were deferred (4.3.0).",
)
ATTEMPT_TIMEOUTS = Counter(
    "postroom_delivery_attempt_timeouts_total",
    "Remote domains whose delivery was cut by POSTROOM_DELIVERY_ATTEMPT_TIMEOUT; their recipients were deferred.",
)
SKIPPED = Counter(
    "postroom_delivery_skipped_recipients_total",
    "Recipients of a redelivered or retried message left alone because the progress record says they are settled.",
)
TLS_POLICY = Counter(
    "postroom_delivery_tls_policy_total",
    "Outbound sessions under a TLS policy (dane, mta-sts) by result: success, or the RFC 8460 result type of a "
    "failure (starttls-not-supported, certificate-host-mismatch, validation-failure, tlsa-invalid, "
    "sts-webpki-invalid); and MTA-STS policies that could not be fetched (fetch-error).",
    ["policy", "result"],
)
DKIM_SIGNATURES = Counter(
    "postroom_delivery_dkim_signatures_total",
    "Relayed messages by DKIM signing result: signed (one signature per algorithm with a key), failed (sent "
    "unsigned), skipped (not from a local domain with keys, or not submitted by us).",
    ["result"],
)

# The per-message series, looked up once: `labels()` hashes and locks on every call.
DELIVERED_DELAY = DELAY.labels("delivered")
BOUNCED_DELAY = DELAY.labels("bounced")
DONE = MESSAGES.labels("done")
DEFERRED = MESSAGES.labels("deferred")
DKIM_SIGNED = DKIM_SIGNATURES.labels("signed")
DKIM_FAILED = DKIM_SIGNATURES.labels("failed")
DKIM_SKIPPED = DKIM_SIGNATURES.labels("skipped")
_attempts: dict[tuple[str, str, str], Counter] = {}
_store_errors: dict[str, Counter] = {}


def attempts(transport: str, outcome: str, status_class: str) -> Counter:
    """The ATTEMPTS series of these labels (a handful of bounded values: transport, outcome, status class)."""
    key = (transport, outcome, status_class)
    series = _attempts.get(key)
    if series is None:
        series = _attempts[key] = ATTEMPTS.labels(transport, outcome, status_class)
    return series


def store_errors(reason: str) -> Counter:
    """The STORE_ERRORS series of a reason (one of services.store.outage.REASONS)."""
    series = _store_errors.get(reason)
    if series is None:
        series = _store_errors[reason] = STORE_ERRORS.labels(reason)
    return series


def tls_policy(policy: str, result: str) -> Counter:
    """The TLS_POLICY series of a policy and result (bounded: the RFC 8460 result types)."""
    return TLS_POLICY.labels(policy, result)


def init_series(queue_labels: list[str]) -> None:
    """Create every labelled series at zero, so dashboards and alerts never see a missing series."""
    for transport in ("local", "smtp"):
        for result, status_class in (("delivered", "2"), ("deferred", "4"), ("bounced", "5")):
            ATTEMPTS.labels(transport, result, status_class)
    create_series(DELAY, ("delivered", "bounced"))
    for name in queue_labels:
        QUEUE_DEPTH.labels(name).set(0)
    create_series(MESSAGES, ("done", "deferred", "requeued", "dead_lettered"))
    create_series(DNS_LOOKUPS, ("MX", "A", "AAAA"), ("ok", "nxdomain", "nodata", "servfail", "timeout"))
    DNS_LOOKUPS.labels("MX", "null_mx")
    create_series(DEAD_LETTERS, ("malformed", "delivery_limit"))
    create_series(SUCCESS_NOTICES, ("delivered", "relayed"))
    create_series(STORE_ERRORS, REASONS)
    create_series(TLS_POLICY, ("dane", "mta-sts"), ("success",))
