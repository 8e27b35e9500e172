"""Write alerts.yml as a Prometheus Operator PrometheusRule for the servicemonitor kustomize component."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
ALERTS = HERE / "alerts.yml"
TARGET = HERE.parent / "kubernetes" / "components" / "servicemonitor" / "prometheusrule.yaml"
HEADER = (
    "# Generated from deploy/prometheus/alerts.yml by deploy/prometheus/to_prometheusrule.py: edit alerts.yml, then\n"
    "# run that script (tests/deploy/test_kubernetes.py fails while the two differ).\n"
)


def prometheus_rule(alerts: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "postroom", "labels": {"app.kubernetes.io/name": "postroom"}},
        "spec": {"groups": alerts["groups"]},
    }


def render() -> str:
    alerts = yaml.safe_load(ALERTS.read_text())
    body: str = yaml.safe_dump(prometheus_rule(alerts), sort_keys=False, width=120)
    return HEADER + body


def main() -> int:
    TARGET.write_text(render())
    print(f"wrote {TARGET}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
