"""Properties of `shared.proxy.read_header`, the PROXY seam of both services: a valid header gives its client and
not a byte more is taken off the socket; anything else is a ProxyHeaderError, never another exception."""

from __future__ import annotations

import asyncio
import socket

from hypothesis import example, given, settings
from hypothesis import strategies as st

from shared.netaddr import canonical_ip
from shared.proxy import ProxyHeaderError, read_header
from tests.proxy_headers import Header, headers, mangled


def read(data: bytes) -> tuple[object, bytes]:
    """read_header over a socket holding `data` and then EOF: (the address or the exception, what is left)."""
    ours, theirs = socket.socketpair()
    with ours, theirs:
        theirs.setblocking(False)
        ours.sendall(data)
        ours.shutdown(socket.SHUT_WR)
        try:
            found: object = asyncio.run(read_header(theirs, 10))
        except Exception as exc:
            found = exc
        theirs.setblocking(True)
        rest = b""
        while chunk := theirs.recv(65536):
            rest += chunk
    return found, rest


@settings(max_examples=300, deadline=None)
@given(header=headers(), after=st.binary(max_size=60))
def test_a_valid_header_names_its_client_and_leaves_every_byte_after_it(header: Header, after: bytes) -> None:
    found, rest = read(header.raw + after)
    assert found == (canonical_ip(header.source) if header.source is not None else None)
    assert rest == after  # the first bytes of the session (or of its TLS handshake) are still there


@settings(max_examples=500, deadline=None)
@given(data=mangled())
@example(b"")
@example(b"PROX")
@example(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2")
def test_anything_else_is_a_proxy_header_error(data: bytes) -> None:
    found, _ = read(data)
    assert found is None or isinstance(found, str | ProxyHeaderError), repr(found)
