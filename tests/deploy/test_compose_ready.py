"""deploy/compose-ready.sh decides from what the compose client and `docker inspect` report (a fake `docker` here:
the tests have no Docker engine)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path

import pytest

from tests.deploy.queries import ROOT

SCRIPT = ROOT / "deploy" / "compose-ready.sh"
# Answers `docker compose version|config --services|ps -q SERVICE` and `docker inspect -f FORMAT ID` from a JSON file
# {"services": {name: [container id, ...]}, "states": {id: "running healthy"}}; "states" may be a list of such
# maps, one per poll (the last one repeats).
FAKE_DOCKER = """#!/usr/bin/env python3
import json, sys
state = json.load(open(sys.argv[0] + ".json"))
args = sys.argv[1:]
if args[:2] == ["compose", "version"]:
    sys.exit(0)
if args[:3] == ["compose", "config", "--services"]:
    print("\\n".join(state["services"]))
elif args[:3] == ["compose", "ps", "-q"]:
    print("\\n".join(state["services"][args[3]]))
elif args[0] == "inspect":
    polls = state["states"] if isinstance(state["states"], list) else [state["states"]]
    counter = sys.argv[0] + ".polls"
    try:
        seen = json.load(open(counter))
    except OSError:
        seen = {}
    n = seen.get(args[-1], 0)
    seen[args[-1]] = n + 1
    json.dump(seen, open(counter, "w"))
    print(polls[min(n, len(polls) - 1)][args[-1]])
else:
    sys.exit(f"fake docker: unexpected {args}")
"""


def run_script(tmp_path: Path, state: dict[str, object], timeout: str = "0") -> subprocess.CompletedProcess[str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    docker = bin_dir / "docker"
    docker.write_text(FAKE_DOCKER)
    docker.chmod(docker.stat().st_mode | stat.S_IXUSR)
    Path(f"{docker}.json").write_text(json.dumps(state))
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "READY_TIMEOUT": timeout, "READY_INTERVAL": "0"}
    env.pop("COMPOSE", None)
    return subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=60, check=False)


SERVICES = {"redis": ["r1"], "delivery": ["d1", "d2"], "pop3": ["p1"]}


def test_ready_when_every_container_is_running_and_healthy(tmp_path: Path) -> None:
    states = dict.fromkeys(["r1", "d1", "d2", "p1"], "running healthy")
    done = run_script(tmp_path, {"services": SERVICES, "states": states})
    assert done.returncode == 0, done.stderr
    assert done.stdout == "ready: 4 containers of 3 services running and healthy\n"


@pytest.mark.parametrize(
    ("services", "states", "says"),
    [
        (
            SERVICES,
            {"r1": "running healthy", "d1": "running healthy", "d2": "running unhealthy", "p1": "running healthy"},
            "delivery (d2): running unhealthy",
        ),
        (
            SERVICES,
            {"r1": "running healthy", "d1": "running healthy", "d2": "running healthy", "p1": "exited no-healthcheck"},
            "pop3 (p1): exited no-healthcheck",
        ),
        ({**SERVICES, "store": []}, dict.fromkeys(["r1", "d1", "d2", "p1"], "running healthy"), "store: no container"),
    ],
)
def test_not_ready_names_what_is_not(
    tmp_path: Path, services: dict[str, list[str]], states: dict[str, str], says: str
) -> None:
    done = run_script(tmp_path, {"services": services, "states": states})
    assert done.returncode == 1
    assert says in done.stderr and done.stdout == ""


def test_waits_for_a_starting_container(tmp_path: Path) -> None:
    healthy = dict.fromkeys(["r1", "d1", "d2", "p1"], "running healthy")
    states = [{**healthy, "p1": "running starting"}, {**healthy, "p1": "running starting"}, healthy]
    done = run_script(tmp_path, {"services": SERVICES, "states": states}, timeout="60")
    assert done.returncode == 0, done.stderr
