"""A private rspamd (Debian's package) for the content filter tests: its own config, directories and loopback port.

It uses the packaged rules (/etc/rspamd) with one scanning worker, no Redis, the test GTUBE patterns on
(`enable_test_patterns`: the AJS/YJS/ZJS variants ask for no action, add header, rewrite subject) and a DNS
server of the test's, so that no lookup leaves the machine. The hyperscan databases rspamd compiles at its first
start (about a minute on 2 cores) are kept in HS_CACHE, so later starts take seconds.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

from tests.helpers import free_port, terminate

HS_CACHE = Path(os.environ.get("POSTROOM_TEST_RSPAMD_CACHE", "/var/tmp/postroom-rspamd-hs"))
START_TIMEOUT = 300.0  # a cold hyperscan cache on a busy 2-core machine

CONFIG = """\
.include "$CONFDIR/common.conf"
options {{
    pidfile = "$RUNDIR/rspamd.pid";
    .include "$CONFDIR/options.inc"
    hs_cache_dir = "{hs_cache}";
    enable_test_patterns = true;
    dns {{ nameserver = ["{nameserver}"]; timeout = 1s; retransmits = 1; }}
}}
logging {{
    type = "file";
    filename = "$LOGDIR/rspamd.log";
    level = "notice";
}}
worker "normal" {{
    bind_socket = "127.0.0.1:{port}";
    .include "$CONFDIR/worker-normal.inc"
    count = 1;
}}
"""


def available() -> str | None:
    """None when rspamd can run here, else why not."""
    if shutil.which("rspamd") is None:
        return "rspamd is not installed (Debian package rspamd; `make test-tools` installs it)"
    return None


class PrivateRspamd:
    def __init__(self, directory: Path, nameserver: str) -> None:
        self.directory = directory
        self.nameserver = nameserver
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> PrivateRspamd:
        HS_CACHE.mkdir(parents=True, exist_ok=True)
        for sub in ("local", "db", "run", "log"):
            (self.directory / sub).mkdir(parents=True, exist_ok=True)
        config = self.directory / "rspamd.conf"
        config.write_text(CONFIG.format(hs_cache=HS_CACHE, nameserver=self.nameserver, port=self.port))
        command = ["rspamd", "-f", "-c", str(config)]
        if os.geteuid() == 0:
            command.append("--insecure")  # workers as root: acceptable for a test instance on loopback only
        for name, sub in (("LOCAL_CONFDIR", "local"), ("DBDIR", "db"), ("RUNDIR", "run"), ("LOGDIR", "log")):
            command += ["--var", f"{name}={self.directory / sub}"]
        command += ["--var", "CONFDIR=/etc/rspamd"]
        with open(self.directory / "stderr.log", "wb") as stderr:
            self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"rspamd exited at start: {self.log()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/ping", timeout=2) as response:
                    if response.status == 200:
                        return self
            except OSError:
                time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"rspamd did not answer within {START_TIMEOUT:.0f}s: {self.log()[-2000:]}")

    def log(self) -> str:
        parts = []
        for name in ("stderr.log", "log/rspamd.log"):
            path = self.directory / name
            if path.exists():
                parts.append(path.read_text(errors="replace"))
        return "\n".join(parts)

    def stop(self) -> None:
        terminate(self.process)
