"""The Grafana dashboard and its provisioning: well-formed, generated from make_dashboard.py, on real metrics."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from types import ModuleType

import pytest
import yaml

from tests.deploy.exported import exported_by_package, service_package
from tests.deploy.queries import DASHBOARD, ROOT, all_queries, dashboard_queries, metric_names

GRAFANA = ROOT / "deploy" / "grafana"


def load_module(name: str, path: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, ROOT / path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is being built
    spec.loader.exec_module(module)
    return module


SIDECAR_COPY = ROOT / "deploy" / "kubernetes" / "base" / "dashboards" / "postroom.json"
SCOPED = 'namespace=~"$namespace", instance=~"$instance"'
# Metric names as they appear in the queries: ours, the exporters' and Prometheus's `up`.
SELECTED = re.compile(r'(?<![\w"$.:-])((?:postroom|redis|rabbitmq)_[a-z0-9_]+|up)\b(?!\()')


def test_dashboard_json_is_what_the_generator_writes() -> None:
    generator = load_module("make_dashboard", "deploy/grafana/make_dashboard.py")
    rendered = generator.render()
    assert DASHBOARD.read_text() == rendered, "run: python deploy/grafana/make_dashboard.py"
    assert SIDECAR_COPY.read_text() == rendered, "run: python deploy/grafana/make_dashboard.py"


def test_every_selector_of_every_query_is_scoped_by_namespace_and_instance() -> None:
    """Two installations in one Prometheus must not add up on one dashboard: each selector carries both matchers
    (the live Prometheus test checks the same by answers: another namespace's view is empty)."""
    checked = 0
    for query in dashboard_queries():
        names = SELECTED.findall(query.expr)
        assert names, query
        for match in SELECTED.finditer(query.expr):
            rest = query.expr[match.end() :]
            assert rest.startswith("{"), (query.name, query.expr)
            matchers = rest[: rest.index("}") + 1]
            assert matchers.endswith(f"{SCOPED}}}"), (query.name, matchers)
            checked += 1
    assert checked > len(dashboard_queries())


def test_namespace_and_instance_variables_list_the_installations_targets() -> None:
    variables = {v["name"]: v for v in json.loads(DASHBOARD.read_text())["templating"]["list"]}
    for name in ("namespace", "instance"):
        variable = variables[name]
        assert variable["type"] == "query" and variable["includeAll"] and variable["allValue"] == ".*"
        assert variable["query"]["query"].startswith("label_values(up{") and variable["query"]["query"].endswith(
            f", {name})"
        )
        assert variable["datasource"]["uid"] == "${datasource}"
    assert 'namespace=~"$namespace"' in variables["instance"]["query"]["query"]
    assert variables["instance"]["multi"] is True


def test_panels_have_unique_ids_fit_the_grid_and_use_the_datasource_variable() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    assert [v["name"] for v in dashboard["templating"]["list"]] == ["datasource", "namespace", "instance"]
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] != "row":
            assert panel["targets"], panel["title"]
            assert panel["datasource"]["uid"] == "${datasource}"


def test_dashboard_covers_the_issue_topics() -> None:
    titles = " | ".join(panel["title"] for panel in json.loads(DASHBOARD.read_text())["panels"])
    for topic in (
        "Messages accepted",
        "Rejections",
        "Queue depth",
        "Delivery outcomes",
        "Accept → delivery latency",
        "POP3 sessions",
        "Authentication failures",
        "Stored bytes",
        "Redis memory",
        "RabbitMQ resource alarms",
    ):
        assert topic in titles


def test_provisioning_points_grafana_at_the_dashboard_and_prometheus() -> None:
    datasource = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())
    assert datasource["datasources"][0]["type"] == "prometheus"
    assert datasource["datasources"][0]["url"] == "http://prometheus:9090"
    provider = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "postroom.yml").read_text())
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards/postroom"


def test_queries_only_read_postroom_metrics_with_a_service_prefix() -> None:
    names = metric_names()
    assert names, "no postroom_ metric found in the queries"
    assert all(service_package(name) is not None for name in names), names
    assert len(dashboard_queries()) > 40


def test_every_metric_the_queries_read_is_exported_by_its_service() -> None:
    """Read from the services' source: a renamed metric fails here before any dashboard goes blank."""
    missing: dict[str, list[str]] = {}
    checked = 0
    for name in sorted(metric_names(all_queries())):
        package = service_package(name)
        assert package is not None
        if not (package / "metrics.py").exists() and package.name != "shared":
            continue
        checked += 1
        if name not in exported_by_package(package):
            missing.setdefault(package.name, []).append(name)
    assert missing == {}
    if checked == 0:
        pytest.skip("no services/<name>/metrics.py in this checkout yet")


@pytest.mark.parametrize("service,package", [("smtp", "smtp_ingress"), ("pop3", "pop3")])
def test_both_protocols_name_their_open_sessions_alike(service: str, package: str) -> None:
    """One name per meaning across services: a dashboard or alert written for one protocol reads the other."""
    gauge = f"postroom_{service}_sessions_active"
    assert gauge in exported_by_package(ROOT / "services" / package)
    assert any(gauge in query.expr for query in dashboard_queries())
