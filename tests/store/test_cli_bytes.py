"""Command-line arguments that are not UTF-8 (Python keeps their bytes as surrogate escapes) get a clear one-line
error from every command that would name a key with them, never "unexpected UnicodeEncodeError"."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.helpers import ROOT

CLI = [sys.executable, "-c", "from services.store.cli import main; main()"]
NOT_UTF8 = b"\xffops@example.com"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([b"user", b"add", NOT_UTF8, b"--password-stdin"], "bad address"),
        ([b"user", b"passwd", NOT_UTF8, b"--password-stdin"], "bad address"),
        ([b"user", b"quota", NOT_UTF8, b"5"], "UTF-8"),
        ([b"user", b"remove", NOT_UTF8], "UTF-8"),
        ([b"alias", b"add", NOT_UTF8, b"x@example.com"], "bad address"),
        ([b"alias", b"add", b"x@example.com", NOT_UTF8], "bad address"),
        ([b"alias", b"remove", NOT_UTF8], "UTF-8"),
        ([b"domain", b"remove", b"\xff.example"], "UTF-8"),
    ],
)
def test_arguments_that_are_not_utf8(namespace: str, args: list[bytes], message: str) -> None:
    env = {**os.environ, "POSTROOM_NAMESPACE": namespace}
    subprocess.run(
        [*CLI, "domain", "add", "example.com"], env=env, capture_output=True, cwd=ROOT, timeout=60, check=True
    )
    done = subprocess.run([*CLI, *args], env=env, input=b"pw\n", capture_output=True, cwd=ROOT, timeout=60)
    lines = done.stderr.decode(errors="replace").strip().splitlines()
    assert done.returncode == 1 and len(lines) == 1, done.stderr
    assert lines[0].startswith("postroom: error: ") and message in lines[0] and "unexpected" not in lines[0]
