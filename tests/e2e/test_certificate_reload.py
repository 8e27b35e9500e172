"""The ingress and POP3 as real processes pick up a renewed certificate on SIGHUP, on 465 and 995, with no restart,
and say in /metrics when the served certificate ends."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import ssl
import urllib.request
from collections.abc import Callable
from pathlib import Path

from cryptography import x509

from shared.certs import not_after
from shared.netaddr import parse_host_port
from tests.certs import TestCA
from tests.harness import ServiceProcess
from tests.helpers import wait_until_sync

NAME = "mail.reload.test"


def serial(port: int, ca: TestCA) -> int:
    """The serial number of the certificate a new implicit-TLS handshake on `port` gets."""
    context = ssl.create_default_context(cafile=str(ca.ca_file))
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname=NAME) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return int(x509.load_der_x509_certificate(der).serial_number)


def expiry(service: ServiceProcess, listener: str) -> float:
    with urllib.request.urlopen(f"{service.metrics_url}/metrics", timeout=10) as response:
        for line in response.read().decode().splitlines():
            if line.startswith(f'postroom_tls_certificate_expiry_timestamp_seconds{{listener="{listener}"}}'):
                return float(line.rsplit(maxsplit=1)[1])
    raise AssertionError(f"no expiry series for {listener}")


def test_sighup_serves_the_renewed_certificate_on_465_and_995(
    base_env: dict[str, str], start_service: Callable[..., ServiceProcess], tmp_path: Path
) -> None:
    ca = TestCA(tmp_path)
    cert, key = ca.issue(NAME)
    live_cert, live_key = tmp_path / "live.crt", tmp_path / "live.key"
    shutil.copy(cert, live_cert)
    shutil.copy(key, live_key)
    tls = {"POSTROOM_TLS_CERT": str(live_cert), "POSTROOM_TLS_KEY": str(live_key), "POSTROOM_TLS_RELOAD_INTERVAL": "1h"}
    ingress = start_service("smtp_ingress", **tls)
    pop3 = start_service("pop3", **tls)
    ports = {
        "smtps": parse_host_port(base_env["POSTROOM_SMTPS_LISTEN"]).port,
        "pop3s": parse_host_port(base_env["POSTROOM_POP3S_LISTEN"]).port,
    }
    before = {name: serial(port, ca) for name, port in ports.items()}

    renewed_cert, renewed_key = ca.issue(NAME)  # the same name: overwrites the issued files, as a renewal does
    os.replace(shutil.copy(renewed_key, tmp_path / "k.new"), live_key)
    os.replace(shutil.copy(renewed_cert, tmp_path / "c.new"), live_cert)
    renewed = int(x509.load_pem_x509_certificate(live_cert.read_bytes()).serial_number)
    for service in (ingress, pop3):
        assert service.proc is not None
        service.proc.send_signal(signal.SIGHUP)  # the interval is an hour: only the signal can have done it

    def serving_the_renewal() -> bool:
        return all(serial(port, ca) == renewed for port in ports.values())

    wait_until_sync(serving_the_renewal, 20, what="465 and 995 serving the renewal")
    assert all(value != renewed for value in before.values())
    assert ingress.alive() and pop3.alive()
    assert expiry(ingress, "smtps") == not_after(live_cert) == expiry(pop3, "pop3s")
