"""Prometheus metrics of the SMTP ingress (`postroom_smtp_*`); every label value comes from a fixed set."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from shared.proxy import DROP_REASONS
from shared.series import create_series

LISTENERS = ("smtp", "submission", "smtps")
# Stages of an SMTP session, used as the `stage` label of rejections (never raw client text).
STAGES = ("connect", "helo", "starttls", "auth", "mail", "rcpt", "data", "other")
# The verbs the ingress answers, the `command` label of replies; "other" is any other verb, or no command at all
# (the greeting, a timeout, the shutdown).
COMMANDS = (
    "HELO", "EHLO", "STARTTLS", "AUTH", "MAIL", "RCPT", "DATA", "BDAT", "RSET", "NOOP", "QUIT", "VRFY", "EXPN", "HELP",
    "other",
)  # fmt: skip

CONNECTIONS = Counter(
    "postroom_smtp_connections_total",
    "TCP connections by listener and admission result (accepted, limit, shutdown).",
    ["listener", "result"],
)
PROXY_DROPPED = Counter(
    "postroom_smtp_proxy_dropped_total",
    "Connections closed before their session under the PROXY protocol: a peer outside "
    "POSTROOM_PROXY_TRUSTED_NETWORKS, the global cap, a missing or bad header, a failed TLS handshake.",
    ["listener", "reason"],
)
SESSIONS_ACTIVE = Gauge("postroom_smtp_sessions_active", "SMTP sessions open now.", ["listener"])
MESSAGES_ACCEPTED = Counter(
    "postroom_smtp_messages_accepted_total", "Messages queued and answered with 250.", ["listener"]
)
REPLIES_HELP = (
    "Replies written, by the command they answer (other: an unknown verb, or none: the greeting, a timeout, the "
    "shutdown) and code."
)
REJECTIONS = Counter(
    "postroom_smtp_rejections_total", "Replies with a 4xx or 5xx code, by session stage and code.", ["stage", "code"]
)
STORE_ERRORS = Counter(
    "postroom_smtp_store_errors_total",
    "Commands answered 451 because Redis was unreachable or refused (connection, timeout, readonly, oom, ...).",
    ["reason"],
)
AUTH_FAILURES = Counter("postroom_smtp_auth_failures_total", "Failed AUTH attempts.", ["mechanism"])
MESSAGE_SIZE = Histogram(
    "postroom_smtp_message_size_bytes",
    "Size of accepted messages as queued.",
    buckets=(1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864),
)
PUBLISH_CONFIRM_SECONDS = Histogram(
    "postroom_smtp_publish_confirm_seconds",
    "Time from publishing a message to the broker's confirm.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
PUBLISH_FAILURES = Counter(
    "postroom_smtp_publish_failures_total",
    "Publishes answered 451: broker down or blocking publishes (alarm), nack, return or timeout.",
    ["reason"],
)
AUTH_RESULTS = Counter(
    "postroom_smtp_auth_results_total",
    "Results of the inbound checks on port 25 (RFC 8601 result names), by method: spf (MAIL FROM), spf_helo, dkim "
    "(one per signature; none for an unsigned message), dmarc, arc (only for ARC-sealed mail).",
    ["method", "result"],
)
AUTH_METHODS = {
    "spf": ("pass", "fail", "softfail", "neutral", "none", "permerror", "temperror"),
    "dkim": ("pass", "fail", "neutral", "none", "permerror", "temperror"),
    "dmarc": ("pass", "fail", "none", "permerror", "temperror"),
}
LIMIT_HITS = Counter(
    "postroom_smtp_limit_hits_total",
    "Sessions or messages refused by a rate limit: send_messages, send_recipients (an account's send limit), "
    "mx_connections (POSTROOM_MX_CONNECTION_RATE).",
    ["limit"],
)
LIMIT_ERRORS = Counter(
    "postroom_smtp_limit_errors_total",
    "Rate limit checks (send, mx_connections) Redis could not answer (the message or session went on "
    "unlimited: fail open).",
    ["limit"],
)
DNSBL = Counter(
    "postroom_smtp_dnsbl_total",
    "DNS blocklist answers by zone (POSTROOM_DNSBL_ZONES) and result: listed, clean, refused (a 127.255.255.x "
    "or other non-listing code), error (timeout, SERVFAIL).",
    ["zone", "result"],
)
FILTER_ACTIONS = Counter(
    "postroom_smtp_filter_actions_total",
    "Content filter (rspamd) verdicts by action (no_action, add_header, reject, ...), and error when it could "
    "not be asked.",
    ["action"],
)
BROKER_CONNECTED = Gauge("postroom_smtp_broker_connected", "1 while the AMQP connection and channel are open.")

LIMITS = ("send_messages", "send_recipients", "mx_connections")
LIMIT_CHECKS = ("send", "mx_connections")
DNSBL_RESULTS = ("listed", "clean", "refused", "error")
# rspamd's actions with `_` for spaces; other: an action of a custom rspamd configuration; error: not asked.
FILTER_ACTIONS_SEEN = (
    "no_action", "greylist", "add_header", "rewrite_subject", "soft_reject", "reject", "other", "error",
)  # fmt: skip
PUBLISH_FAILURE_REASONS = ("unavailable", "blocked", "nack", "returned", "timeout", "error")
AUTH_MECHANISMS = ("PLAIN", "LOGIN")
# The rejections an operator watches most, created at zero so the first one shows up in rate().
COMMON_REJECTIONS = (
    ("connect", "421"),
    ("auth", "535"),
    ("mail", "553"),
    ("mail", "552"),
    ("rcpt", "550"),
    ("rcpt", "554"),
    ("rcpt", "452"),
    ("data", "451"),
    ("data", "552"),
    ("other", "500"),
    ("other", "501"),
)


class ReplyCounts(Collector):
    """postroom_smtp_commands_total, kept in plain ints and made a counter family only when /metrics is read.

    About seven replies per message: a prometheus_client Counter takes a lock and checks its amount on every inc,
    which cost about a fortieth of the ingress's CPU. Only the event loop's thread counts, and /metrics is served on
    that loop too (shared/health.py), so nothing else touches the ints.
    """

    def __init__(self) -> None:
        self.counts: dict[tuple[str, int], int] = {}  # by (verb, code); the labels are made when collected
        self.created: dict[tuple[str, int], float] = {}

    def count(self, command: str, code: int) -> None:
        key = (command, code)
        count = self.counts.get(key)
        if count is None:
            self.created[key] = time.time()
            count = 0
        self.counts[key] = count + 1

    def collect(self) -> Iterator[CounterMetricFamily]:
        series: dict[tuple[str, str], tuple[int, float]] = {}
        for key, count in list(self.counts.items()):
            command, code = key
            labels = (command if command in COMMANDS else "other", str(code))
            total, created = series.get(labels, (0, self.created[key]))
            series[labels] = (total + count, min(created, self.created[key]))
        family = self._family()
        for labels, (total, created) in sorted(series.items()):
            family.add_metric(labels, total, created=created)
        yield family

    def describe(self) -> Iterator[CounterMetricFamily]:
        yield self._family()

    @staticmethod
    def _family() -> CounterMetricFamily:
        return CounterMetricFamily("postroom_smtp_commands_total", REPLIES_HELP, labels=("command", "code"))


REPLIES = ReplyCounts()
REGISTRY.register(REPLIES)
# One reply more of postroom_smtp_commands_total{command, code} (a verb outside COMMANDS counts as other).
count_reply = REPLIES.count
_REJECTION_SERIES: dict[tuple[str, int], Any] = {}


def count_rejection(stage: str, code: int) -> None:
    series = _REJECTION_SERIES.get((stage, code))
    if series is None:
        series = _REJECTION_SERIES[(stage, code)] = REJECTIONS.labels(stage, str(code))
    series.inc()


def initialise() -> None:
    """Create every labelled series at zero so dashboards never see a missing series."""
    for listener in LISTENERS:
        SESSIONS_ACTIVE.labels(listener).set(0)
    create_series(MESSAGES_ACCEPTED, LISTENERS)
    create_series(CONNECTIONS, LISTENERS, ("accepted", "limit", "shutdown"))
    create_series(PROXY_DROPPED, LISTENERS, DROP_REASONS)
    create_series(PUBLISH_FAILURES, PUBLISH_FAILURE_REASONS)
    create_series(AUTH_FAILURES, AUTH_MECHANISMS)
    for stage, code in COMMON_REJECTIONS:
        REJECTIONS.labels(stage, code)
    for method, results in AUTH_METHODS.items():
        create_series(AUTH_RESULTS, (method,), results)
    create_series(LIMIT_HITS, LIMITS)
    create_series(LIMIT_ERRORS, LIMIT_CHECKS)
    create_series(FILTER_ACTIONS, FILTER_ACTIONS_SEEN)
    BROKER_CONNECTED.set(0)
