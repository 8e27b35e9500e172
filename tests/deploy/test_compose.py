"""docker-compose.yml: validated by the compose client when one is installed, and its structure checked always."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.queries import ROOT
from tests.deploy.settings_check import check_service_env, unknown_variables
from tests.deploy.tools import run

COMPOSE = ROOT / "docker-compose.yml"
EXAMPLE = ROOT / "deploy" / "compose.env.example"
# Values a test puts where the example leaves a required one empty.
REQUIRED_VALUES = {
    "RABBITMQ_PASSWORD": "rabbitmq0secret",
    "REDIS_PASSWORD": "redis0secret",
    "POSTROOM_HOSTNAME": "mail.example.com",
    "POSTROOM_ADMIN_TOKEN": "admin0token",
    "GRAFANA_ADMIN_PASSWORD": "grafana0secret",
}
POSTROOM = {"smtp_ingress": 9101, "delivery": 9102, "pop3": 9103, "store": 9104}
MAIL_PORTS = {25, 587, 465, 110, 995}
INTERPOLATION = re.compile(r"\$\{(\w+)(?::?[-?]([^}]*))?\}")


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


def with_defaults(value: str) -> str:
    """Interpolate `${VAR:-default}` as compose does when VAR is unset."""
    return INTERPOLATION.sub(lambda m: m.group(2) or "", value)


def filled_env_file() -> dict[str, str]:
    """The example .env with every required value filled in, as an operator's would be."""
    values: dict[str, str] = {}
    for line in EXAMPLE.read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            values[name] = value or REQUIRED_VALUES[name]
    return values


def interpolate(value: str, env: dict[str, str]) -> str:
    """`${VAR}`, `${VAR:-default}` and `${VAR:?message}` as compose reads them from `env`."""

    def one(match: re.Match[str]) -> str:
        given = env.get(match.group(1), "")
        if given:
            return given
        assert "?" not in match.group(0).split("}")[0], f"{match.group(1)} is required"
        return match.group(2) or ""

    return INTERPOLATION.sub(one, value)


def container_env(service: str, env_file: dict[str, str]) -> dict[str, str]:
    """What a Postroom container sees: every variable of .env (env_file), overridden by its `environment:`."""
    environment = compose()["services"][service]["environment"]
    return {**env_file, **{key: interpolate(str(value), env_file) for key, value in environment.items()}}


def compose_client() -> list[str] | None:
    """`docker compose` (v2 plugin) if it answers, else the standalone `docker-compose`, else None."""
    if shutil.which("docker") and run(["docker", "compose", "version"], timeout=20).returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


def run_config(client: list[str], directory: Path, env_file: dict[str, str] | None) -> subprocess.CompletedProcess[str]:
    """`config -q` of a copy of the compose file in `directory` with that .env (none: no .env at all), and none of
    the variables in the test's own environment (compose would read them from there)."""
    shutil.copy(COMPOSE, directory / "docker-compose.yml")
    env_path = directory / ".env"
    env_path.unlink(missing_ok=True)
    if env_file is not None:
        env_path.write_text("".join(f"{key}={value}\n" for key, value in env_file.items()))
    environ = {k: v for k, v in os.environ.items() if k not in REQUIRED_VALUES and not k.startswith("POSTROOM_")}
    return subprocess.run(
        [*client, "config", "-q"], cwd=directory, env=environ, capture_output=True, text=True, timeout=60, check=False
    )


def test_compose_client_accepts_the_file_with_the_required_values(tmp_path: Path) -> None:
    """`config -q` parses, interpolates and validates against the compose schema; it needs no Docker engine."""
    client = compose_client()
    if client is None:
        pytest.skip("no compose client (docker compose plugin, or Debian's docker-compose package)")
    result = run_config(client, tmp_path, filled_env_file())
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("missing", sorted(REQUIRED_VALUES))
def test_compose_refuses_to_start_without_a_required_value(tmp_path: Path, missing: str) -> None:
    client = compose_client()
    if client is None:
        pytest.skip("no compose client (docker compose plugin, or Debian's docker-compose package)")
    env_file = filled_env_file()
    env_file[missing] = ""
    result = run_config(client, tmp_path, env_file)
    assert result.returncode != 0
    assert f"set {missing} in .env" in result.stderr


def test_the_example_as_shipped_does_not_start(tmp_path: Path) -> None:
    """Copied without filling in the secrets, the example is refused (no silent change-me passwords)."""
    client = compose_client()
    if client is None:
        pytest.skip("no compose client (docker compose plugin, or Debian's docker-compose package)")
    example = {k: v for k, v in filled_env_file().items() if k not in REQUIRED_VALUES}
    assert run_config(client, tmp_path, {**example, **dict.fromkeys(REQUIRED_VALUES, "")}).returncode != 0
    assert run_config(client, tmp_path, None).returncode != 0


def test_every_required_value_is_required_wherever_it_is_used() -> None:
    """A `${VAR:-default}` beside a `${VAR:?…}` would start with the default where the other is not read."""
    text = COMPOSE.read_text()
    for name in REQUIRED_VALUES:
        uses = re.findall(r"\$\{" + name + r"(:?[-?][^}]*)?\}", text)
        assert uses and all(use.startswith(":?") for use in uses), (name, uses)
    assert "change-me" not in text


def test_the_stack_has_every_part() -> None:
    services = compose()["services"]
    assert set(services) == {"rabbitmq", "redis", "redis-exporter", *POSTROOM, "prometheus", "grafana"}
    assert "management" in services["rabbitmq"]["image"]
    assert services["delivery"]["deploy"]["replicas"] == 2
    for name, service in services.items():
        assert "healthcheck" in service, name
        assert service["restart"] == "unless-stopped", name


def redis_command() -> list[str]:
    return [with_defaults(str(arg)) for arg in compose()["services"]["redis"]["command"]]


def test_redis_keeps_an_append_only_file_and_snapshots() -> None:
    command = redis_command()
    assert command[command.index("--appendonly") + 1] == "yes"
    assert command[command.index("--appendfsync") + 1] == "everysec"
    assert "--appendfsync always" in COMPOSE.read_text(), "the strictest setting is documented beside it"
    save = command[command.index("--save") + 1].split()
    assert len(save) >= 2 and len(save) % 2 == 0 and all(part.isdigit() for part in save), save


def size(text: str) -> int:
    """Bytes of a compose (1g, 512m) or Redis (768mb) size."""
    match = re.fullmatch(r"(\d+)\s*([kmg]?)b?", text.strip().lower())
    assert match is not None, text
    return int(match[1]) * int(1024 ** " kmg".index(match[2] or " "))


def test_redis_refuses_writes_at_maxmemory_below_its_container_limit() -> None:
    """noeviction: stored mail is never evicted; the limit leaves room for the fork of a snapshot or AOF rewrite."""
    command = redis_command()
    assert command[command.index("--maxmemory-policy") + 1] == "noeviction"
    maxmemory = size(command[command.index("--maxmemory") + 1])
    limit = size(with_defaults(str(compose()["services"]["redis"]["mem_limit"])))
    assert 0.5 * limit <= maxmemory <= 0.8 * limit


def test_every_container_has_a_memory_limit_and_rotated_logs() -> None:
    for name, service in compose()["services"].items():
        assert size(with_defaults(str(service["mem_limit"]))) >= 32 * 1024**2, name
        logging = service["logging"]
        assert logging["driver"] == "json-file", name
        assert size(logging["options"]["max-size"]) <= 100 * 1024**2 and int(logging["options"]["max-file"]) >= 2


def test_rabbitmq_sizes_its_memory_alarm_by_the_container_limit() -> None:
    """Without the override the node reads the host's RAM and its alarm would sit above the container's limit."""
    rabbitmq = compose()["services"]["rabbitmq"]
    mount = next(m for m in rabbitmq["volumes"] if m.endswith("/etc/rabbitmq/conf.d/20-postroom.conf:ro"))
    config = dict(
        line.split(" = ", 1)
        for line in (ROOT / mount.split(":")[0]).read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert size(config["total_memory_available_override_value"]) == size(rabbitmq["mem_limit"])
    assert 0 < float(config["vm_memory_high_watermark.relative"]) < 1


def test_redis_and_rabbitmq_metrics_are_scraped() -> None:
    services = compose()["services"]
    exporter = services["redis-exporter"]
    assert exporter["environment"]["REDIS_ADDR"] == "redis://redis:6379"
    assert exporter["depends_on"]["redis"]["condition"] == "service_healthy"
    config = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    targets = {
        job["job_name"]: job["static_configs"][0]["targets"]
        for job in config["scrape_configs"]
        if "static_configs" in job
    }
    assert targets["redis"] == ["redis-exporter:9121"]
    assert targets["rabbitmq"] == ["rabbitmq:15692"]


def test_postroom_containers_are_healthy_only_when_ready() -> None:
    """`docker compose ps` (and deploy/compose-ready.sh) then say whether the stack can take mail."""
    services = compose()["services"]
    for name in POSTROOM:
        assert services[name]["healthcheck"]["test"][-1] == "--ready", name


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
    env_file = filled_env_file()
    checked = [name for name in POSTROOM if check_service_env(name, container_env(name, env_file))]
    if not checked:
        pytest.skip("no services/<name>/config.py in this checkout yet")


def test_every_postroom_variable_in_the_compose_file_is_read_by_a_service() -> None:
    variables = {key for name in POSTROOM for key in compose()["services"][name]["environment"]}
    assert unknown_variables(variables) == set()


def consumer_timeout_seconds(conf: str) -> float:
    """consumer_timeout (ms) from a rabbitmq.conf text, in seconds."""
    [value] = [line.split("=")[1] for line in conf.splitlines() if line.strip().startswith("consumer_timeout")]
    return int(value) / 1000


def delivery_holds_at_most() -> float:
    """How long the delivery may hold a message unacked with its defaults: a wait behind prefetch / concurrency
    others, each bounded by the attempt deadline, then its own attempt."""
    from services.delivery.config import DeliverySettings

    defaults = DeliverySettings()
    return (defaults.delivery_prefetch / defaults.delivery_concurrency + 1) * defaults.delivery_attempt_timeout


def test_rabbitmq_consumer_timeout_is_set_above_the_delivery_deadline() -> None:
    [mount] = [v for v in compose()["services"]["rabbitmq"]["volumes"] if "conf.d" in v]
    conf = (ROOT / mount.split(":")[0]).read_text()
    assert consumer_timeout_seconds(conf) > delivery_holds_at_most()
