"""The metric samples each service exports, read from its source with `ast` (no import, no side effects)."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.deploy.queries import ROOT

# Metric name prefix -> the package that exports it.
SERVICES = {
    "postroom_smtp_": "smtp_ingress",
    "postroom_delivery_": "delivery",
    "postroom_pop3_": "pop3",
    "postroom_store_": "store",
    "postroom_queue_": "store",  # the queue index, read by the store service (services/store/stats.py)
}
# Metrics every service with that part exports from shared/ (the TLS listeners' certificates: shared/certs.py).
SHARED = ("postroom_tls_",)
COUNTERS = {"Counter", "CounterMetricFamily"}
GAUGES = {"Gauge", "GaugeMetricFamily", "Enum"}
HISTOGRAMS = {"Histogram", "HistogramMetricFamily"}
SUMMARIES = {"Summary", "SummaryMetricFamily"}


def samples_of(kind: str, name: str) -> set[str]:
    """The sample names prometheus_client exposes for one metric family."""
    if kind in COUNTERS:
        base = name.removesuffix("_total")
        return {f"{base}_total", f"{base}_created"}
    if kind in HISTOGRAMS:
        return {f"{name}_bucket", f"{name}_sum", f"{name}_count", f"{name}_created"}
    if kind in SUMMARIES:
        return {name, f"{name}_sum", f"{name}_count", f"{name}_created"}
    return {name}


def exported_by_source(source: str) -> set[str]:
    samples: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call) or not node.args:
            continue
        func = node.func
        kind = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
        first = node.args[0]
        if (
            kind in COUNTERS | GAUGES | HISTOGRAMS | SUMMARIES
            and isinstance(first, ast.Constant)
            and isinstance(first.value, str)
            and first.value.startswith("postroom_")
        ):
            samples |= samples_of(kind, first.value)
    return samples


def service_package(metric: str, root: Path = ROOT) -> Path | None:
    if metric.startswith(SHARED):
        return root / "shared"
    for prefix, package in SERVICES.items():
        if metric.startswith(prefix):
            return root / "services" / package
    return None


def exported_by_package(package: Path) -> set[str]:
    samples: set[str] = set()
    for path in sorted(package.rglob("*.py")):
        samples |= exported_by_source(path.read_text())
    return samples
