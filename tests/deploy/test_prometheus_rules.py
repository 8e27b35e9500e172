"""The alert rules and the Prometheus config: promtool checks them and runs the rules' unit tests."""

from __future__ import annotations

from pathlib import Path

import yaml

from tests.deploy.queries import ALERTS, ROOT, dashboard_queries
from tests.deploy.tools import require, run

PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"


def test_alert_rules_pass_promtool_check() -> None:
    promtool = require("promtool")
    result = run([promtool, "check", "rules", str(ALERTS)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_alert_rules_unit_tests_pass() -> None:
    promtool = require("promtool")
    result = run([promtool, "test", "rules", str(PROMETHEUS_DIR / "alerts_test.yml")])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_compose_prometheus_config_is_valid_and_loads_the_rules() -> None:
    promtool = require("promtool")
    result = run([promtool, "check", "config", str(PROMETHEUS_DIR / "prometheus.yml")])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 rule files found" in result.stdout


def test_every_alert_has_a_unit_test_that_fires_it() -> None:
    rules = yaml.safe_load(ALERTS.read_text())
    alerts = {rule["alert"] for group in rules["groups"] for rule in group["rules"]}
    tests = yaml.safe_load((PROMETHEUS_DIR / "alerts_test.yml").read_text())
    fired = {
        case["alertname"] for test in tests["tests"] for case in test.get("alert_rule_test", []) if case["exp_alerts"]
    }
    assert alerts - fired == set()


def test_every_alert_has_severity_summary_and_description() -> None:
    rules = yaml.safe_load(ALERTS.read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
            assert {"summary", "description"} <= set(rule["annotations"]), rule["alert"]


def test_every_dashboard_query_parses(tmp_path: Path) -> None:
    """promtool has no expression checker, but it parses recording rules: one rule per dashboard query."""
    promtool = require("promtool")
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:query_{i}", "expr": q.runnable()} for i, q in enumerate(dashboard_queries())
                ],
            }
        ]
    }
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump(rules))
    result = run([promtool, "check", "rules", str(path)])
    assert result.returncode == 0, result.stdout + result.stderr
