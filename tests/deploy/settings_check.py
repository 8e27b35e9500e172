"""Feed a deployment's environment to a service's real settings class: a bad or misspelt value fails the test."""

from __future__ import annotations

import contextlib
import importlib
import inspect
import os
from collections.abc import Iterator

import pytest

from shared.settings import CommonSettings, load_settings


@contextlib.contextmanager
def environment(env: dict[str, str]) -> Iterator[None]:
    """Exactly `env` as the POSTROOM_* variables for the duration (others removed, all restored after)."""
    saved = {key: value for key, value in os.environ.items() if key.startswith("POSTROOM_")}
    for key in saved:
        del os.environ[key]
    os.environ.update(env)
    try:
        yield
    finally:
        for key in env:
            os.environ.pop(key, None)
        os.environ.update(saved)


def settings_class(package: str) -> type[CommonSettings] | None:
    """The CommonSettings subclass in services/<package>/config.py, or None while that module does not exist."""
    try:
        module = importlib.import_module(f"services.{package}.config")
    except ModuleNotFoundError:
        return None
    classes = [
        cls
        for cls in vars(module).values()
        if inspect.isclass(cls) and issubclass(cls, CommonSettings) and cls.__module__ == module.__name__
    ]
    assert len(classes) == 1, f"services.{package}.config should define one settings class, found {classes}"
    return classes[0]


def service_settings(package: str, env: dict[str, str]) -> CommonSettings | None:
    """The service's settings from `env` (ConfigError on a bad value); None when the service is not in this checkout."""
    cls = settings_class(package)
    if cls is None:
        return None
    with environment({k: v for k, v in env.items() if k.startswith("POSTROOM_")}):
        return load_settings(cls)


def check_service_env(package: str, env: dict[str, str]) -> bool:
    """True when checked (raises ConfigError on a bad value); False when the service is not in this checkout."""
    return service_settings(package, env) is not None


SERVICE_PACKAGES = ("smtp_ingress", "delivery", "pop3", "store")
# Set by the manifests ahead of the services that will read them (none at present).
PENDING_VARIABLES: set[str] = set()


def known_variables() -> set[str] | None:
    """Every POSTROOM_* variable some service reads; None until all four settings modules are in this checkout."""
    names: set[str] = set()
    for package in SERVICE_PACKAGES:
        cls = settings_class(package)
        if cls is None:
            return None
        names |= {f"POSTROOM_{field.upper()}" for field in cls.model_fields}
    return names


def unknown_variables(variables: set[str]) -> set[str]:
    """Variables no service reads: settings ignore unknown names, so a misspelt one would silently do nothing."""
    known = known_variables()
    if known is None:
        pytest.skip("not every services/<name>/config.py is in this checkout yet")
    return {name for name in variables if name.startswith("POSTROOM_")} - known - PENDING_VARIABLES
