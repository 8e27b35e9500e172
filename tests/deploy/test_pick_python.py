"""scripts/pick-python.sh, the interpreter `make venv` builds from: POSTROOM_PYTHON when set, else the distribution's
Python 3.11, else python3; always an absolute path to a Python 3.11 or newer, or one line saying why there is none."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.deploy.queries import ROOT

PICK = ROOT / "scripts" / "pick-python.sh"
BASE = Path(os.path.realpath(sys.executable))  # the interpreter the venv running the tests was made from


def pick(**env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(PICK)], env={**os.environ, **env}, capture_output=True, text=True, timeout=60, check=False
    )


def test_it_names_an_absolute_python_of_311_or_newer() -> None:
    done = pick(POSTROOM_PYTHON="")
    assert done.returncode == 0, done.stderr
    chosen = Path(done.stdout.strip())
    assert chosen.is_absolute()
    version = subprocess.run(
        [str(chosen), "-c", "import sys; print(sys.version_info[:2] >= (3, 11))"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert version.stdout.strip() == "True"


def test_the_distributions_python_comes_first_when_there_is_one() -> None:
    distribution = Path("/usr/bin/python3.11")
    if not distribution.exists():
        pytest.skip("no /usr/bin/python3.11 on this machine")
    done = pick(POSTROOM_PYTHON="")
    assert done.stdout.strip() == os.path.realpath(distribution)


def test_postroom_python_names_the_interpreter() -> None:
    done = pick(POSTROOM_PYTHON=str(BASE))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(BASE)


def test_a_postroom_python_that_is_not_one_is_refused_in_one_line() -> None:
    done = pick(POSTROOM_PYTHON="/nonexistent/python9")
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.strip().splitlines() == [
        "pick-python: POSTROOM_PYTHON=/nonexistent/python9 is not Python 3.11 or newer"
    ]
