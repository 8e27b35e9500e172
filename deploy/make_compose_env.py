"""Write deploy/compose.env.example: every variable of docker-compose.yml and every service setting, with defaults.

The Postroom settings come from the services' settings classes (their fields and defaults), the others from the
`${VAR:-default}` and `${VAR:?message}` interpolations of docker-compose.yml, so the example cannot drift from
either: tests/deploy/test_compose.py fails until this script has been run again. Run it with the project's venv:
    .venv/bin/python deploy/make_compose_env.py
"""

from __future__ import annotations

import importlib
import inspect
import ipaddress
import re
import socket
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from pydantic import BeforeValidator, SecretStr  # noqa: E402  (after the path set-up, like the imports below)
from pydantic.fields import FieldInfo  # noqa: E402

from shared.netaddr import HostPort  # noqa: E402
from shared.settings import ENV_PREFIX, CommonSettings, delay_value, duration_value  # noqa: E402

TARGET = ROOT / "deploy" / "compose.env.example"
COMPOSE = ROOT / "docker-compose.yml"
# (package, title) in the order the example lists them.
SERVICES = (
    ("smtp_ingress", "SMTP ingress (services/smtp_ingress)"),
    ("delivery", "Delivery (services/delivery)"),
    ("pop3", "POP3 (services/pop3)"),
    ("store", "Store, admin API and the postroom CLI (services/store)"),
)
# Fields for tests only (fault injection): never in an operator's file.
TEST_ONLY = frozenset({"delivery_fault_crash_after_store"})
INTERPOLATION = re.compile(r"\$\{(\w+)(?::([-?])([^}]*))?\}")
# What each docker-compose.yml variable that is not a Postroom setting is for (a new one needs a line here).
COMPOSE_VARIABLES = {
    "RABBITMQ_PASSWORD": "RabbitMQ's password for the user below (letters and digits: it goes into a URL)",
    "REDIS_PASSWORD": "Redis's requirepass (letters and digits: it goes into a URL)",
    "GRAFANA_ADMIN_PASSWORD": "Grafana's admin password (http://127.0.0.1:3000)",
    "RABBITMQ_USER": "RabbitMQ user the services connect as (created at the broker's first start)",
    "GRAFANA_ADMIN_USER": "Grafana's admin user",
    "REDIS_MAXMEMORY": "Redis maxmemory (noeviction): the mail you keep, +10 %; about 3/4 of REDIS_MEMORY_LIMIT",
    "REDIS_MEMORY_LIMIT": "the Redis container's memory limit: maxmemory plus room for the fork of a snapshot",
    "POSTROOM_IMAGE": "the image the services run; `docker compose build` makes postroom:latest from this checkout",
    "POSTROOM_TLS_DIR": "the directory mounted at /etc/postroom/tls (see deploy/tls/README.md)",
}
REQUIRED_SETTINGS = {
    "POSTROOM_HOSTNAME": "the name in your MX record and the PTR of this host's address (EHLO, greeting, Received:)",
    "POSTROOM_ADMIN_TOKEN": "bearer token of the admin API (e.g. `openssl rand -hex 32`)",
}


@dataclass(frozen=True)
class Setting:
    name: str  # POSTROOM_...
    default: str
    readers: tuple[str, ...]  # packages whose settings class has the field


def settings_classes() -> Iterator[tuple[str, type[CommonSettings]]]:
    for package, _title in SERVICES:
        module = importlib.import_module(f"services.{package}.config")
        (cls,) = (
            c
            for c in vars(module).values()
            if inspect.isclass(c) and issubclass(c, CommonSettings) and c.__module__ == module.__name__
        )
        yield package, cls


def duration(seconds: float) -> str:
    """A number of seconds as the settings write it: 300 -> 5m, 86400*5 -> 5d, 0.01 -> 0.01s."""
    if seconds == 0:
        return "0"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def env_text(value: Any) -> str:
    """A default as the environment variable that gives it (empty: unset)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return duration(value)
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, tuple | list):
        if value and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            return ",".join(duration(v) for v in value)  # a retry schedule
        return ",".join(env_text(v) for v in value)
    if isinstance(value, dict):
        return ",".join(f"{k}={v}" for k, v in value.items())
    if isinstance(value, HostPort | ipaddress.IPv4Network | ipaddress.IPv6Network | str | int):
        return str(value)
    return str(value)


def is_duration(field: FieldInfo) -> bool:
    return any(
        isinstance(item, BeforeValidator) and item.func in (duration_value, delay_value) for item in field.metadata
    )


def field_defaults(cls: type[CommonSettings]) -> dict[str, str | None]:
    """POSTROOM_X -> the default as text, None for one computed where the service runs (the host name)."""
    defaults: dict[str, str | None] = {}
    for name, field in cls.model_fields.items():
        if name in TEST_ONLY:
            continue
        if field.default_factory is socket.getfqdn:
            defaults[f"{ENV_PREFIX}{name.upper()}"] = None
            continue
        value = field.default_factory() if field.default_factory else field.default  # type: ignore[call-arg]
        as_duration = is_duration(field) and isinstance(value, int | float)
        defaults[f"{ENV_PREFIX}{name.upper()}"] = duration(value) if as_duration else env_text(value)
    return defaults


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


def compose_environment() -> dict[str, dict[str, str]]:
    """service -> its environment (with the x-postroom-env anchor merged in)."""
    return {
        name: {key: str(value) for key, value in (service.get("environment") or {}).items()}
        for name, service in compose()["services"].items()
    }


def interpolations(text: str) -> dict[str, tuple[str, str]]:
    """VAR -> (kind, argument): kind "-" with the default, "?" with the message, "" for a plain ${VAR}."""
    found: dict[str, tuple[str, str]] = {}
    for match in INTERPOLATION.finditer(text):
        found.setdefault(match.group(1), (match.group(2) or "", match.group(3) or ""))
    return found


def classify() -> tuple[dict[str, Setting], dict[str, dict[str, str]]]:
    """The settings an operator may set (with the default compose gives them), and those compose fixes."""
    fixed: dict[str, dict[str, str]] = {}
    given: dict[str, str] = {}
    for service, environment in compose_environment().items():
        for key, value in environment.items():
            if not key.startswith(ENV_PREFIX):
                continue
            own = INTERPOLATION.fullmatch(value)
            if own is not None and own.group(1) == key and own.group(2) == "-":
                given[key] = own.group(3)
            elif own is None or own.group(1) != key:
                fixed.setdefault(key, {})[service] = value
    settings: dict[str, Setting] = {}
    for package, cls in settings_classes():
        for name, default in field_defaults(cls).items():
            text = given.get(name, default if default is not None else "(the machine's name)")
            known = settings.get(name)
            if known is None:
                settings[name] = Setting(name, text, (package,))
                continue
            if known.default != text and name not in fixed:
                raise SystemExit(f"{name}: default {known.default!r} in {known.readers}, {text!r} in {package}")
            settings[name] = Setting(name, known.default, (*known.readers, package))
    return settings, fixed


def header() -> list[str]:
    return [
        "# Settings of the docker compose stack: copy this file to .env beside docker-compose.yml, fill in the",
        "# required values, and change any other by removing its '#'. Every line shows the default that applies",
        "# while it stays commented out. The meaning of each POSTROOM_* setting: README.md, Configuration.",
        "# Generated by deploy/make_compose_env.py from docker-compose.yml and the services' settings classes.",
        "COMPOSE_PROJECT_NAME=postroom",
    ]


def required_block(variables: dict[str, tuple[str, str]]) -> list[str]:
    lines = ["", "# --- Required: docker compose refuses to start while one of these is empty ---"]
    descriptions = {**COMPOSE_VARIABLES, **REQUIRED_SETTINGS}
    for name, (kind, _argument) in variables.items():
        if kind == "?":
            lines += [f"# {descriptions[name]}", f"{name}="]
    return lines


def compose_block(variables: dict[str, tuple[str, str]], settings: dict[str, Setting]) -> list[str]:
    lines = ["", "# --- The stack ---"]
    for name, (kind, argument) in variables.items():
        if kind == "-" and name not in settings:
            lines += [f"# {COMPOSE_VARIABLES[name]}", f"# {name}={argument}"]
    return lines


def settings_blocks(
    settings: dict[str, Setting], fixed: dict[str, dict[str, str]], required: set[str]
) -> Iterator[list[str]]:
    """One block per set of readers: every service, each service alone, and those a few services share."""
    titles = dict(SERVICES)
    every = tuple(package for package, _ in SERVICES)
    groups: dict[tuple[str, ...], list[Setting]] = {}
    for setting in settings.values():
        if setting.name not in required and setting.name not in fixed:
            groups.setdefault(setting.readers, []).append(setting)
    order = [every, *((p,) for p in every), *(r for r in groups if len(r) not in (1, len(every)))]
    for readers in order:
        if readers not in groups:
            continue
        if readers == every:
            title = "Every service"
        elif len(readers) == 1:
            title = titles[readers[0]]
        else:
            title = f"Read by {', '.join(readers)}"
        yield ["", f"# --- {title} ---", *(f"# {s.name}={s.default}" for s in groups[readers])]


def fixed_block(fixed: dict[str, dict[str, str]]) -> list[str]:
    lines = [
        "",
        "# --- Set for each container by docker-compose.yml (a value here has no effect) ---",
    ]
    for name in sorted(fixed):
        values = {service: INTERPOLATION.sub(r"${\1}", value) for service, value in fixed[name].items()}
        if len(set(values.values())) == 1 and len(values) > 1:
            lines.append(f"#   {name}={next(iter(values.values()))}")
        else:
            lines.append(f"#   {name}: " + "; ".join(f"{service} {value}" for service, value in sorted(values.items())))
    return lines


def render() -> str:
    settings, fixed = classify()
    variables = interpolations(COMPOSE.read_text())
    unknown = [n for n in variables if n not in COMPOSE_VARIABLES and n not in settings and n not in REQUIRED_SETTINGS]
    if unknown:
        raise SystemExit(f"describe these docker-compose.yml variables in COMPOSE_VARIABLES: {unknown}")
    required = {name for name, (kind, _) in variables.items() if kind == "?"}
    lines = header() + required_block(variables) + compose_block(variables, settings)
    for block in settings_blocks(settings, fixed, required):
        lines += block
    lines += fixed_block({k: v for k, v in fixed.items() if k not in required})
    return "\n".join(lines) + "\n"


def main() -> int:
    TARGET.write_text(render())
    print(f"wrote {TARGET}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
