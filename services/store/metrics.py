"""Prometheus metrics of the store service: totals from Redis (refreshed periodically) and admin API requests."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

from prometheus_client import REGISTRY, Counter, Gauge
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from services.store.keys import Keys
from services.store.stats import StoreStats, compute_stats
from shared.logging import get_logger
from shared.series import create_series

log = get_logger(__name__)

API_REQUESTS = Counter(
    "postroom_store_api_requests_total",
    "Admin API requests by method and status code.",
    ["method", "status"],
)
ACME_ORDERS = Counter(
    "postroom_store_acme_orders_total",
    "Certificate orders of built-in ACME: issued, or failed (the CA unreachable or refusing; retried with backoff).",
    ["result"],
)
ACME_EXPIRY = Gauge(
    "postroom_store_acme_certificate_expiry_timestamp_seconds",
    "When the certificate built-in ACME keeps in the store ends (Unix time), as this replica last looked; 0: none.",
)
STATS_REFRESH_FAILURES = Counter(
    "postroom_store_stats_refresh_failures_total",
    "Failed recomputations of the store totals (Redis unreachable).",
)


class StoreStatsCollector(Collector):
    """Reports the last computed StoreStats; all zero until the first refresh, so no series is ever missing."""

    def __init__(self) -> None:
        self.stats = StoreStats()

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        s = self.stats
        yield GaugeMetricFamily("postroom_store_domains", "Local domains.", value=s.domains)
        yield GaugeMetricFamily("postroom_store_mailboxes", "User mailboxes.", value=s.mailboxes)
        yield GaugeMetricFamily("postroom_store_messages", "Messages stored in all mailboxes.", value=s.messages)
        yield GaugeMetricFamily("postroom_store_stored_bytes", "Bytes stored in all mailboxes.", value=s.bytes)
        queue = GaugeMetricFamily(
            "postroom_queue_messages",
            "Messages not yet finished, by state in the queue index (active, deferred, held, dead, deleted).",
            labels=["state"],
        )
        for state, count in sorted(s.queue.items()):
            queue.add_metric([state], count)
        yield queue
        # Counted in Redis by every service that records (Trace.record), so it survives restarts of any of them.
        yield CounterMetricFamily(
            "postroom_store_trace_events", "Trace events written by all services.", value=s.trace_events
        )


async def refresh_stats(redis: Any, keys: Keys, collector: StoreStatsCollector, interval: float) -> None:
    """Recompute the totals every `interval` seconds until cancelled; a failure keeps the last values."""
    while True:
        try:
            collector.stats = await compute_stats(redis, keys)
        except Exception as exc:
            STATS_REFRESH_FAILURES.inc()
            log.warning("store stats refresh failed", error=str(exc))
        await asyncio.sleep(interval)


# The totals /metrics reports; registered once, by `initialise`, and kept up to date by `refresh_stats`.
COLLECTOR = StoreStatsCollector()
_registered: list[StoreStatsCollector] = []


def initialise(_settings: object = None) -> None:
    """Create the API's series at zero (the first request then shows up in rate()) and report the store totals."""
    methods = ("GET", "POST", "PATCH", "DELETE")
    create_series(API_REQUESTS, methods, ("200", "201", "204", "400", "401", "404", "409", "500", "503"))
    create_series(ACME_ORDERS, ("issued", "failed"))
    if not _registered:
        REGISTRY.register(COLLECTOR)
        _registered.append(COLLECTOR)
