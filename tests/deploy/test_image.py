"""The container image: Dockerfile rules, the hash-locked requirements, the build context and the healthcheck."""

from __future__ import annotations

import contextlib
import importlib.util
import re
import sys
import threading
import tomllib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import ModuleType

import dockerfile  # type: ignore[import-not-found]  # a compiled module without type information
import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.deploy.queries import ROOT
from tests.helpers import free_port

DOCKERFILE = ROOT / "Dockerfile"
LOCK = ROOT / "requirements.lock"
PIN = re.compile(r"^([A-Za-z0-9_.-]+)==([^\s;\\]+)")


def instructions(keyword: str) -> list[dockerfile.Command]:
    """Every `keyword` instruction, as BuildKit's own parser reads the Dockerfile."""
    return [command for command in dockerfile.parse_file(str(DOCKERFILE)) if command.cmd == keyword.upper()]


def locked() -> dict[str, tuple[str, int]]:
    """name -> (version, number of hashes) from requirements.lock."""
    pins: dict[str, tuple[str, int]] = {}
    current = None
    for line in LOCK.read_text().splitlines():
        match = PIN.match(line)
        if match:
            current = canonicalize_name(match.group(1))
            pins[current] = (match.group(2), 0)
        elif current and line.strip().startswith("--hash=sha256:"):
            version, hashes = pins[current]
            pins[current] = (version, hashes + 1)
    return pins


def test_image_is_slim_python_311_running_as_a_numeric_non_root_user() -> None:
    (arg,) = instructions("ARG")
    assert arg.value[0].startswith("PYTHON_IMAGE=python:3.11-slim")
    assert [f.value[0] for f in instructions("FROM")] == ["${PYTHON_IMAGE}", "${PYTHON_IMAGE}"]
    (user,) = instructions("USER")
    uid = user.value[0].split(":")[0]
    assert uid.isdigit() and int(uid) >= 1000, "numeric, so Kubernetes can verify runAsNonRoot"
    assert user.start_line > instructions("FROM")[-1].start_line, "the final stage runs as that user"
    assert all("setcap" not in c.original for c in instructions("RUN"))


def test_dependencies_install_only_from_the_lock_with_hashes_and_wheels() -> None:
    runs = " ".join(c.value[0] for c in instructions("RUN"))
    assert "pip install --require-hashes --only-binary=:all: --no-binary=dkimpy,pyspf" in runs
    assert "--no-build-isolation --no-deps -r /tmp/requirements.lock" in runs
    assert "--no-build-isolation --no-index" in runs


def test_healthcheck_and_listeners_need_no_privilege_and_no_curl() -> None:
    (healthcheck,) = instructions("HEALTHCHECK")
    assert healthcheck.value[:2] == ("CMD", "python")
    copied_to = {c.value[-1] for c in instructions("COPY")}
    assert healthcheck.value[2] in copied_to
    assert "curl" not in DOCKERFILE.read_text()
    env = dict(zip(*[iter(v for c in instructions("ENV") for v in c.value)] * 2, strict=True))
    ports = [int(v.rsplit(":", 1)[1]) for k, v in env.items() if k.endswith("_LISTEN")]
    assert len(ports) == 6 and all(port >= 1024 for port in ports)
    exposed = {int(p) for c in instructions("EXPOSE") for p in c.value}
    assert set(ports) <= exposed


def test_lock_pins_every_runtime_dependency_within_its_range_with_hashes() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    pins = locked()
    assert all(hashes > 0 for _version, hashes in pins.values()), "every pin carries its sha256 hashes"
    requirements = [Requirement(dep) for dep in project["project"]["dependencies"]]
    requirements += [Requirement(dep) for dep in project["build-system"]["requires"]]
    stale = []
    for requirement in requirements:
        if requirement.marker is not None and not requirement.marker.evaluate({"sys_platform": "linux"}):
            continue
        pin = pins.get(canonicalize_name(requirement.name))
        if pin is None or not requirement.specifier.contains(pin[0], prereleases=True):
            stale.append(f"{requirement} (locked: {pin[0] if pin else 'missing'})")
    assert stale == [], "run deploy/docker/update-lock.sh"


def test_build_context_holds_what_the_dockerfile_copies_and_nothing_else() -> None:
    ignore = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()]
    rules = [line for line in ignore if line and not line.startswith("#")]
    assert rules[0] == "*", "deny everything, then allow"
    allowed = {rule[1:].rstrip("/") for rule in rules if rule.startswith("!")}
    copied = {source for c in instructions("COPY") if not c.flags for source in c.value[:-1]}
    assert copied == allowed


# The HEALTHCHECK script, loaded from its file (it is not part of an importable package).
def healthcheck() -> ModuleType:
    spec = importlib.util.spec_from_file_location("postroom_healthcheck", ROOT / "deploy" / "docker" / "healthcheck.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("listen", "cmdline", "url"),
    [
        ("0.0.0.0:9101", [], "http://127.0.0.1:9101/healthz"),
        (":9102", [], "http://127.0.0.1:9102/healthz"),
        ("[::]:9103", [], "http://127.0.0.1:9103/healthz"),
        ("10.1.2.3:9999", [], "http://10.1.2.3:9999/healthz"),
        ("::1:9104", [], "http://[::1]:9104/healthz"),
        (None, ["python", "-m", "services.pop3"], "http://127.0.0.1:9103/healthz"),
        ("", ["/opt/postroom/bin/python", "-m", "services.store"], "http://127.0.0.1:9104/healthz"),
        (None, ["postroom", "--help"], None),
    ],
)
def test_healthcheck_finds_the_service_port(listen: str | None, cmdline: list[str], url: str | None) -> None:
    assert healthcheck().health_url(listen, cmdline) == url


@contextlib.contextmanager
def health_server(status: int) -> Iterator[int]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(status if self.path == "/healthz" else 404)
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(("status", "healthy"), [(200, True), (503, False)])
def test_healthcheck_exit_status_follows_healthz(status: int, healthy: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    module = healthcheck()
    with health_server(status) as port:
        monkeypatch.setenv("POSTROOM_METRICS_LISTEN", f"0.0.0.0:{port}")
        assert module.main() == (0 if healthy else 1)


def test_healthcheck_fails_when_nothing_listens(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POSTROOM_METRICS_LISTEN", f"127.0.0.1:{free_port()}")
    assert healthcheck().main() == 1


def test_working_directory_is_not_writable_by_the_service() -> None:
    """`python -m` imports from the working directory first: a writable one would let a planted module shadow ours."""
    (workdir,) = instructions("WORKDIR")
    assert workdir.value[0] == "/opt/postroom"


@contextlib.contextmanager
def probe_server(statuses: dict[str, int]) -> Iterator[int]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(statuses.get(self.path, 404))
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def test_ready_flag_asks_readyz(monkeypatch: pytest.MonkeyPatch) -> None:
    """Alive but not ready (Redis or the broker down): healthy for the image, not for compose's --ready check."""
    module = healthcheck()
    with probe_server({"/healthz": 200, "/readyz": 503}) as port:
        monkeypatch.setenv("POSTROOM_METRICS_LISTEN", f"0.0.0.0:{port}")
        assert module.main([]) == 0
        assert module.main(["--ready"]) == 1
    with probe_server({"/healthz": 200, "/readyz": 200}) as port:
        monkeypatch.setenv("POSTROOM_METRICS_LISTEN", f"0.0.0.0:{port}")
        assert module.main(["--ready"]) == 0
    assert module.main(["--readyz"]) == 2
