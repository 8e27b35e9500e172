"""A client that connects and at once closes its side (FIN) frees its session then, not at the command timeout."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Callable

import pytest

from tests.helpers import wait_until_sync
from tests.smtp_ingress.conftest import RunningIngress


def exchange(port: int, data: bytes) -> bytes:
    """Send `data` and end the sending side; all the server says until it closes (a socket timeout fails)."""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        with contextlib.suppress(OSError):  # the server may have closed (or reset) already
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
        received = b""
        with contextlib.suppress(ConnectionError):
            while chunk := sock.recv(65536):
                received += chunk
        return received


# Enough connections that some FINs arrive before the session's command loop took its first step (the case that
# leaked: aiosmtpd's eof_received cancels the task, which then never runs the code that would close).
ROUNDS = 60


@pytest.mark.parametrize("proxy_protocol", [False, True])
def test_connect_and_close_at_once_frees_the_session(
    make_ingress: Callable[..., RunningIngress], accounts: None, proxy_protocol: bool
) -> None:
    # Timers no test waits for: each connection must end because the client's did.
    ingress = make_ingress(
        smtp_proxy_protocol=proxy_protocol,
        proxy_trusted_networks="127.0.0.0/8",
        smtp_command_timeout=3600,
        smtp_max_connections_per_ip=ROUNDS * 3,
    )
    for _ in range(ROUNDS):
        for opening in (b"", b"PRO", b"EHLO x"):
            answer = exchange(ingress.port("smtp"), opening)  # raises when the server keeps it open
            assert answer in (b"", b"220 mx.postroom.test ESMTP Postroom\r\n") or answer.startswith(b"220 "), answer
    sessions = ingress.app.server.registry.sessions
    wait_until_sync(lambda: not sessions, what="every session closed")
