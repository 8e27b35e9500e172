"""Debian's `pebble` (Let's Encrypt's test ACME server) on loopback for one test: its own config, its own TLS
certificate from a test CA, its DNS from the tests' DNS server, and HTTP-01 checked on the port the test names."""

from __future__ import annotations

import json
import shutil
import ssl
import subprocess
import urllib.request
from pathlib import Path

import pytest

from tests.certs import TestCA
from tests.helpers import free_port, terminate, wait_until_sync


class Pebble:
    """`pebble -config … -dnsserver …`; `directory` is its ACME directory URL, `ca_file` trusts its HTTPS."""

    def __init__(self, workdir: Path, http_port: int, dns_server: str) -> None:
        if shutil.which("pebble") is None:
            pytest.skip("pebble is not installed (make test-tools installs it)")
        workdir.mkdir(parents=True, exist_ok=True)
        self.ca = TestCA(workdir, "Pebble's own HTTPS test CA")
        cert, key = self.ca.issue("localhost", "127.0.0.1")
        self.port, self.management = free_port(), free_port()
        config = {
            "pebble": {
                "listenAddress": f"127.0.0.1:{self.port}",
                "managementListenAddress": f"127.0.0.1:{self.management}",
                "certificate": str(cert),
                "privateKey": str(key),
                "httpPort": http_port,
                "tlsPort": free_port(),
                "ocspResponderURL": "",
                "externalAccountBindingRequired": False,
            }
        }
        self.config = workdir / "pebble-config.json"
        self.config.write_text(json.dumps(config))
        self.dns_server = dns_server
        self.log_path = workdir / "pebble.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def directory(self) -> str:
        return f"https://127.0.0.1:{self.port}/dir"

    @property
    def ca_file(self) -> Path:
        return self.ca.ca_file

    def start(self) -> Pebble:
        env = {
            "PATH": "/usr/bin:/bin",
            "PEBBLE_VA_NOSLEEP": "1",  # validate at once, not after a random pause of up to 15 s
            "PEBBLE_WFE_NONCEREJECT": "0",  # no nonces refused at random: the test's orders are repeatable
        }
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                ["pebble", "-config", str(self.config), "-dnsserver", self.dns_server],
                env=env,
                stdout=log,
                stderr=log,
            )
        wait_until_sync(self._answers, 30, what=f"pebble up ({self.log_path})")
        return self

    def _answers(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"pebble exited: {self.log_path.read_text(errors='replace')}")
        try:
            with urllib.request.urlopen(self.directory, timeout=5, context=self._client()) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def _client(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file))

    def root(self) -> str:
        """The root every certificate this pebble issues chains to (made anew at each pebble start)."""
        url = f"https://127.0.0.1:{self.management}/roots/0"
        with urllib.request.urlopen(url, timeout=10, context=self._client()) as response:
            return str(response.read().decode())

    def stop(self) -> None:
        terminate(self.proc)
