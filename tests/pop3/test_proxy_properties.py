"""Properties of PROXY headers in front of POP3: after any valid header a greeting; anything else is dropped quietly."""

from __future__ import annotations

import asyncio

from hypothesis import HealthCheck, example, given, settings

from services.pop3.server import Pop3Server
from tests.pop3.conftest import StartServer
from tests.proxy_headers import Header, headers, mangled, talk
from tests.smtp_ingress.test_proxy_properties import parse

CHECKS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


async def start(start_pop3: StartServer) -> Pop3Server:
    # POSTROOM_PROXY_TRUSTED_NETWORKS: who may send a header (loopback: this test); ignored where not known.
    return await start_pop3(
        pop3_proxy_protocol=True, pop3_proxy_protocol_timeout=3600.0, proxy_trusted_networks="127.0.0.0/8"
    )


async def test_a_greeting_after_any_valid_header(start_pop3: StartServer) -> None:
    server = await start(start_pop3)

    @CHECKS
    @given(header=headers())
    def check(header: Header) -> None:
        text = talk(server.ports["pop3"], header.raw, end=False)
        assert text.startswith(b"+OK") and text.rstrip(b"\r\n").rsplit(b"\r\n", 1)[-1].startswith(b"+OK"), text

    await asyncio.to_thread(check)


async def test_anything_else_is_dropped_without_a_word(start_pop3: StartServer) -> None:
    server = await start(start_pop3)

    @CHECKS
    @given(data=mangled())
    @example(b"")
    @example(b"PRO")
    def check(data: bytes) -> None:
        found, _ = parse(data)
        valid = getattr(found, "valid", False)
        answer = talk(server.ports["pop3"], data, end=not valid)
        if valid:
            assert answer.startswith(b"+OK")
        else:
            assert answer == b""

    await asyncio.to_thread(check)
    # Still serving: a valid header gets its greeting.
    assert (await asyncio.to_thread(talk, server.ports["pop3"], b"PROXY UNKNOWN\r\n", False)).startswith(b"+OK")
