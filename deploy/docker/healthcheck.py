"""Container HEALTHCHECK: exit 0 when this container's service answers `/healthz` on its metrics port, else 1.

With `--ready` it asks `/readyz` instead: 200 only while the service's Redis, broker and listeners are up. The
compose stack uses that, so `docker compose ps` shows a Postroom container healthy only when it can do its work."""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request
from pathlib import Path

# The default metrics port of each service (docs/design.md), used when POSTROOM_METRICS_LISTEN is not set.
DEFAULT_PORTS = {"smtp_ingress": 9101, "delivery": 9102, "pop3": 9103, "store": 9104}
WILDCARDS = {"", "0.0.0.0", "::", "[::]", "*"}


def service_of(cmdline: list[str]) -> str | None:
    """The service name in a `python -m services.<name>` command line."""
    for arg in cmdline:
        if arg.startswith("services."):
            name = arg.removeprefix("services.")
            if name in DEFAULT_PORTS:
                return name
    return None


def pid1_cmdline() -> list[str]:
    try:
        raw = Path("/proc/1/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def health_url(listen: str | None, cmdline: list[str], path: str = "/healthz") -> str | None:
    """Where to ask: the host and port of POSTROOM_METRICS_LISTEN (wildcards mean loopback), else the default port."""
    if listen is not None and listen.strip():
        host, _, port = listen.strip().rpartition(":")
        if host in WILDCARDS:
            host = "127.0.0.1"
        elif ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return f"http://{host}:{port}{path}"
    service = service_of(cmdline)
    if service is None:
        return None
    return f"http://127.0.0.1:{DEFAULT_PORTS[service]}{path}"


def check(url: str, timeout: float = 3.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False


def main(argv: list[str] | None = None) -> int:
    args = argv or []
    if any(arg != "--ready" for arg in args):
        print("usage: healthcheck.py [--ready]", file=sys.stderr)
        return 2
    path = "/readyz" if args else "/healthz"
    url = health_url(os.environ.get("POSTROOM_METRICS_LISTEN"), pid1_cmdline(), path)
    if url is None:
        print("healthcheck: set POSTROOM_METRICS_LISTEN (no service found in PID 1's command line)", file=sys.stderr)
        return 1
    if check(url):
        return 0
    print(f"healthcheck: {url} did not answer 200", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
