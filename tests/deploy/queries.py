"""The PromQL the dashboard and the alert rules run, and the metric names they depend on (read from the files)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "postroom.json"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"

# Every Postroom metric is named postroom_<service>_...; other identifiers in queries are PromQL or external.
METRIC = re.compile(r"\bpostroom_[a-z0-9_]+")
# Grafana's built-in interval variables, replaced by a fixed range when a query runs outside Grafana.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "1h"}


@dataclass(frozen=True)
class NamedQuery:
    source: str  # "dashboard" or "alert"
    name: str  # panel title / legend, or alert name
    expr: str

    def runnable(self, rate_interval: str = "1m", namespace: str = ".*", instance: str = ".*") -> str:
        """The query as Grafana sends it with these values of the dashboard's variables (".*" is their "All")."""
        expr = self.expr.replace("$__rate_interval", rate_interval)
        for variable, value in GRAFANA_VARIABLES.items():
            expr = expr.replace(variable, value)
        return expr.replace("$namespace", namespace).replace("$instance", instance)


def dashboard_queries(path: Path = DASHBOARD) -> list[NamedQuery]:
    dashboard: dict[str, Any] = json.loads(path.read_text())
    queries = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            label = f"{panel['title']} / {target.get('legendFormat') or target['refId']}"
            queries.append(NamedQuery("dashboard", label, target["expr"]))
    return queries


def alert_queries(path: Path = ALERTS) -> list[NamedQuery]:
    rules: dict[str, Any] = yaml.safe_load(path.read_text())
    return [
        NamedQuery("alert", rule.get("alert") or rule["record"], rule["expr"])
        for group in rules["groups"]
        for rule in group["rules"]
    ]


def all_queries() -> list[NamedQuery]:
    return dashboard_queries() + alert_queries()


def metric_names(queries: list[NamedQuery] | None = None) -> set[str]:
    """The Postroom sample names (e.g. postroom_smtp_connections_total, ..._bucket) the queries read."""
    return {name for query in (queries or all_queries()) for name in METRIC.findall(query.expr)}


def family_of(sample_name: str) -> str:
    """The sample name without a histogram suffix: the name a /metrics page shows in its TYPE line."""
    for suffix in ("_bucket", "_sum", "_count"):
        if sample_name.endswith(suffix):
            return sample_name.removesuffix(suffix)
    return sample_name
