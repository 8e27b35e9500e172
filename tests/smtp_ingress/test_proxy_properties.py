"""Properties of PROXY headers (aiosmtpd.proxy_protocol, used by the ingress and POP3): valid ones parse to what
they say and leave the stream right after them; anything else is refused, never a crash."""

from __future__ import annotations

import asyncio

import pytest
from aiosmtpd.proxy_protocol import get_proxy
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.proxy_headers import Header, headers, mangled, talk
from tests.smtp_ingress.conftest import RunningIngress

SERVICE_CHECKS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def parse(data: bytes) -> tuple[object, bytes]:
    """get_proxy over a stream holding `data` and then EOF: (ProxyData or the exception raised, what is left)."""

    async def run() -> tuple[object, bytes]:
        reader = asyncio.StreamReader()
        reader.feed_data(data)
        reader.feed_eof()
        try:
            found: object = await get_proxy(reader)
        except Exception as exc:
            found = exc
        return found, await reader.read()

    return asyncio.run(run())


@settings(max_examples=300, deadline=None)
@given(header=headers(), after=st.binary(max_size=40))
def test_a_valid_header_says_what_was_sent_and_leaves_the_rest(header: Header, after: bytes) -> None:
    found, rest = parse(header.raw + after)
    assert getattr(found, "valid", False), getattr(found, "error", found)
    assert rest == after
    if header.source is not None:
        assert (found.src_addr, found.dst_addr) == (header.source, header.destination)  # type: ignore[attr-defined]
        assert (found.src_port, found.dst_port) == (header.source_port, header.destination_port)  # type: ignore[attr-defined]
    else:
        assert found.src_addr is None  # type: ignore[attr-defined]


@settings(max_examples=500, deadline=None)
@given(data=mangled())
@example(b"")
@example(b"PROX")
@example(b"\r\n\r\n\x00")
def test_anything_else_is_refused_without_raising(data: bytes) -> None:
    found, _ = parse(data)
    if isinstance(found, Exception):
        # Only a stream that ends before the 5-byte signature: the services drop such a connection.
        assert isinstance(found, asyncio.IncompleteReadError) and len(data) < 5
        return
    assert hasattr(found, "valid")


@pytest.fixture
def proxied_ingress(make_ingress: object, accounts: None) -> RunningIngress:
    # POSTROOM_PROXY_TRUSTED_NETWORKS: who may send a header (loopback: this test); a no-op where it is not known.
    return make_ingress(smtp_proxy_protocol=True, proxy_trusted_networks="127.0.0.0/8,::1/128")  # type: ignore[operator, no-any-return]


@SERVICE_CHECKS
@given(header=headers())
def test_the_ingress_greets_after_any_valid_header(proxied_ingress: RunningIngress, header: Header) -> None:
    answer = talk(proxied_ingress.port("smtp"), header.raw, end=False)
    assert answer.startswith(b"220 ") and answer.endswith(b"\r\n221 2.0.0 Bye\r\n"), answer


@SERVICE_CHECKS
@given(data=mangled())
@example(b"PRO")
@example(b"")
def test_the_ingress_drops_anything_else_and_stays_ready(proxied_ingress: RunningIngress, data: bytes) -> None:
    found, _ = parse(data)
    valid = getattr(found, "valid", False)
    answer = talk(proxied_ingress.port("smtp"), data, end=not valid)
    if valid:
        assert answer.startswith(b"220 ")  # a mangling that is still a valid header (e.g. a flipped port digit)
    else:
        assert answer == b""  # no greeting, no reply: the connection is closed
    assert proxied_ingress.ready()
