"""docker-compose.yml: validated by the compose client when one is installed, and its structure checked always."""

from __future__ import annotations

import re
import shutil
from typing import Any

import pytest
import yaml

from tests.deploy.queries import ROOT
from tests.deploy.settings_check import check_service_env, unknown_variables
from tests.deploy.tools import run

COMPOSE = ROOT / "docker-compose.yml"
POSTROOM = {"smtp_ingress": 9101, "delivery": 9102, "pop3": 9103, "store": 9104}
MAIL_PORTS = {25, 587, 465, 110, 995}
INTERPOLATION = re.compile(r"\$\{(\w+)(?::?[-?]([^}]*))?\}")


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


def with_defaults(value: str) -> str:
    """Interpolate `${VAR:-default}` as compose does when VAR is unset."""
    return INTERPOLATION.sub(lambda m: m.group(2) or "", value)


def compose_client() -> list[str] | None:
    """`docker compose` (v2 plugin) if it answers, else the standalone `docker-compose`, else None."""
    if shutil.which("docker") and run(["docker", "compose", "version"], timeout=20).returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


def test_compose_client_accepts_the_file() -> None:
    """`config -q` parses, interpolates and validates against the compose schema; it needs no Docker engine."""
    client = compose_client()
    if client is None:
        pytest.skip("no compose client (docker compose plugin, or Debian's docker-compose package)")
    result = run([*client, "-f", str(COMPOSE), "config", "-q"], timeout=60, cwd=str(ROOT))
    assert result.returncode == 0, result.stderr
    example = str(ROOT / "deploy" / "compose.env.example")
    result = run([*client, "--env-file", example, "-f", str(COMPOSE), "config", "-q"], timeout=60, cwd=str(ROOT))
    assert result.returncode == 0, result.stderr


def test_the_stack_has_every_part() -> None:
    services = compose()["services"]
    assert set(services) == {"rabbitmq", "redis", *POSTROOM, "prometheus", "grafana"}
    assert "management" in services["rabbitmq"]["image"]
    assert services["delivery"]["deploy"]["replicas"] == 2
    for name, service in services.items():
        assert "healthcheck" in service, name
        assert service["restart"] == "unless-stopped", name


def test_redis_keeps_an_append_only_file_synced_every_second() -> None:
    command = compose()["services"]["redis"]["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    assert command[command.index("--appendfsync") + 1] == "everysec"
    assert "--appendfsync always" in COMPOSE.read_text(), "the strictest setting is documented beside it"


def test_postroom_services_wait_for_healthy_backends_and_are_hardened() -> None:
    services = compose()["services"]
    for name in POSTROOM:
        service = services[name]
        assert service["command"] == ["python", "-m", f"services.{name}"]
        needs = {"redis"} if name == "pop3" else {"redis", "rabbitmq"}
        assert {dep: cond["condition"] for dep, cond in service["depends_on"].items()} == dict.fromkeys(
            needs, "service_healthy"
        )
        assert service["read_only"] is True and service["cap_drop"] == ["ALL"]
        assert "no-new-privileges:true" in service["security_opt"]
        assert service["environment"]["POSTROOM_METRICS_LISTEN"] == f"0.0.0.0:{POSTROOM[name]}"
    assert services["grafana"]["depends_on"]["prometheus"]["condition"] == "service_healthy"


def test_mail_ports_are_published_onto_the_unprivileged_listeners() -> None:
    services = compose()["services"]
    published = {}
    for name in ("smtp_ingress", "pop3"):
        listens = {
            int(value.rsplit(":", 1)[1])
            for key, value in services[name]["environment"].items()
            if key.endswith("_LISTEN") and key != "POSTROOM_METRICS_LISTEN"
        }
        for mapping in services[name]["ports"]:
            host, container = (int(part) for part in mapping.split(":"))
            assert container in listens and container >= 1024, mapping
            published[host] = name
    assert set(published) == MAIL_PORTS
    # Everything else is published on loopback only (admin API, management UI, Prometheus, Grafana).
    for name, service in services.items():
        if name not in ("smtp_ingress", "pop3"):
            assert all(mapping.startswith("127.0.0.1:") for mapping in service.get("ports", [])), name


def test_data_lives_in_named_volumes() -> None:
    data = compose()
    named = set(data["volumes"])
    mounts = {
        name: {mount.split(":")[0] for mount in service.get("volumes", [])}
        for name, service in data["services"].items()
    }
    for name in ("rabbitmq", "redis", "prometheus", "grafana"):
        assert mounts[name] & named, name
    assert named <= set().union(*mounts.values())


def test_prometheus_scrapes_each_service_on_its_metrics_port() -> None:
    config = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    for name, port in POSTROOM.items():
        (sd,) = jobs[f"postroom-{name.replace('_', '-')}"]["dns_sd_configs"]
        assert sd["names"] == [name] and sd["port"] == port
    assert config["rule_files"] == ["alerts.yml"]
    mounts = compose()["services"]["prometheus"]["volumes"]
    assert "./deploy/prometheus:/etc/prometheus:ro" in mounts


def test_compose_environment_is_accepted_by_every_service() -> None:
    services = compose()["services"]
    checked = [
        name
        for name in POSTROOM
        if check_service_env(name, {k: with_defaults(str(v)) for k, v in services[name]["environment"].items()})
    ]
    if not checked:
        pytest.skip("no services/<name>/config.py in this checkout yet")


def test_every_postroom_variable_in_the_compose_file_is_read_by_a_service() -> None:
    variables = {key for name in POSTROOM for key in compose()["services"][name]["environment"]}
    assert unknown_variables(variables) == set()
