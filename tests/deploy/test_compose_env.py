"""deploy/compose.env.example: every setting of every service and every compose variable, each with its default."""

from __future__ import annotations

import importlib.util
import re
import sys
from types import ModuleType

import pytest

from shared.errors import ConfigError
from shared.settings import load_settings
from tests.deploy.queries import ROOT
from tests.deploy.settings_check import SERVICE_PACKAGES, environment, settings_class

EXAMPLE = ROOT / "deploy" / "compose.env.example"
COMPOSE = ROOT / "docker-compose.yml"
LINE = re.compile(r"^#? ?(?P<name>[A-Z][A-Z0-9_]*)=(?P<value>.*)$")
# Fault injection for tests: deliberately not offered to operators.
TEST_ONLY = {"POSTROOM_DELIVERY_FAULT_CRASH_AFTER_STORE"}


def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_compose_env", ROOT / "deploy" / "make_compose_env.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def example() -> dict[str, str]:
    """NAME -> the value shown, for every `NAME=value` and `# NAME=value` line."""
    found: dict[str, str] = {}
    for line in EXAMPLE.read_text().splitlines():
        match = LINE.match(line)
        if match:
            assert match["name"] not in found, f"{match['name']} twice"
            found[match["name"]] = match["value"]
    return found


def fields() -> dict[str, set[str]]:
    """POSTROOM_X -> the packages whose settings class reads it."""
    readers: dict[str, set[str]] = {}
    for package in SERVICE_PACKAGES:
        cls = settings_class(package)
        assert cls is not None, package
        for name in cls.model_fields:
            readers.setdefault(f"POSTROOM_{name.upper()}", set()).add(package)
    return readers


def test_the_example_is_what_the_generator_writes() -> None:
    assert EXAMPLE.read_text() == generator().render(), "run: .venv/bin/python deploy/make_compose_env.py"


def test_every_setting_of_every_service_is_in_the_example() -> None:
    shown = set(example()) | set(re.findall(r"^#   (POSTROOM_[A-Z0-9_]+)", EXAMPLE.read_text(), re.MULTILINE))
    assert set(fields()) - TEST_ONLY - shown == set()


def test_every_variable_in_the_example_is_a_setting_or_read_by_docker_compose() -> None:
    interpolated = set(re.findall(r"\$\{(\w+)", COMPOSE.read_text()))
    assert set(example()) - set(fields()) - interpolated - {"COMPOSE_PROJECT_NAME"} == set()
    assert interpolated - set(example()) == set(), "a compose variable the example does not show"


def test_required_values_are_empty_in_the_example_and_required_by_compose() -> None:
    text = COMPOSE.read_text()
    required = {name for name, value in example().items() if f"${{{name}:?" in text}
    assert required >= {"RABBITMQ_PASSWORD", "REDIS_PASSWORD", "POSTROOM_ADMIN_TOKEN", "GRAFANA_ADMIN_PASSWORD"}
    for line in EXAMPLE.read_text().splitlines():
        match = LINE.match(line)
        if match and match["name"] in required:
            assert line == f"{match['name']}=", "a required value is empty and not commented out"


def test_each_default_shown_is_the_default_the_service_has() -> None:
    """Setting a variable to the value the example shows changes nothing (compose's own defaults aside; an empty one
    stands for "unset")."""
    compose_text = COMPOSE.read_text()
    readers = fields()
    checked = 0
    for name, value in example().items():
        if name not in readers or name in TEST_ONLY or f"${{{name}:" in compose_text:
            continue
        for package in readers[name]:
            cls = settings_class(package)
            assert cls is not None
            field = name.removeprefix("POSTROOM_").lower()
            if value == "":
                # Shown empty: unset by default (no relay host, no extra name servers, a self-signed certificate).
                assert not cls.model_fields[field].get_default(call_default_factory=True), name
                checked += 1
                continue
            with environment({name: value}):
                try:
                    loaded = load_settings(cls)
                except ConfigError as exc:
                    pytest.fail(f"{name}={value} is refused by {package}: {exc}")
            with environment({}):
                default = load_settings(cls)
            assert getattr(loaded, field) == getattr(default, field), (name, value, package)
            checked += 1
    assert checked > 60


def test_compose_defaults_in_the_example_are_accepted() -> None:
    """The settings compose gives a default of its own (`${POSTROOM_X:-…}`) show that default, a valid value."""
    compose_text = COMPOSE.read_text()
    readers = fields()
    for name, value in example().items():
        own = re.search(r"\$\{" + name + r":-([^}]*)\}", compose_text)
        if name in readers and own:
            assert value == own.group(1), name
            for package in readers[name]:
                cls = settings_class(package)
                assert cls is not None
                with environment({name: value}):
                    load_settings(cls)
