"""The fault proxy itself, in front of the test Redis: each fault does what it says, at the byte it says."""

from __future__ import annotations

import contextlib
import socket
import uuid
from collections.abc import Iterator

import pytest
import redis

from tests.faults.proxy import Action, Direction, FaultProxy, redis_proxy
from tests.helpers import REDIS_URL, wait_until_sync

PING = b"PING\r\n"
PONG = b"+PONG\r\n"


@pytest.fixture
def proxy() -> Iterator[FaultProxy]:
    with redis_proxy() as started:
        yield started


def connect(proxy: FaultProxy) -> socket.socket:
    return socket.create_connection((proxy.host, proxy.port), timeout=20)


def read_all(sock: socket.socket, count: int) -> bytes:
    data = b""
    while len(data) < count and (chunk := sock.recv(count - len(data))):
        data += chunk
    return data


def nothing_pending(sock: socket.socket) -> bool:
    """True when the socket is open and holds nothing to read (no data, no EOF)."""
    sock.setblocking(False)
    try:
        sock.recv(1, socket.MSG_PEEK)
    except BlockingIOError:
        return True
    finally:
        sock.setblocking(True)
    return False


def test_pass_and_delay_forward_everything(proxy: FaultProxy) -> None:
    with connect(proxy) as sock:
        sock.sendall(PING)
        assert read_all(sock, len(PONG)) == PONG
        proxy.delay(0.05)
        sock.sendall(PING * 3)
        assert read_all(sock, 3 * len(PONG)) == PONG * 3
    assert proxy.bytes[Direction.UP] == 4 * len(PING)


def test_blackhole_drops_bytes_and_keeps_the_socket_open(proxy: FaultProxy) -> None:
    with connect(proxy) as sock:
        sock.sendall(PING)
        assert read_all(sock, len(PONG)) == PONG
        proxy.blackhole(Direction.UP)
        sock.sendall(PING)
        wait_until_sync(lambda: proxy.dropped[Direction.UP] == len(PING), what="PING dropped")
        assert nothing_pending(sock) and proxy.open_connections == 1
        proxy.pass_through()
        sock.sendall(PING)
        assert read_all(sock, len(PONG)) == PONG


def test_cut_closes_both_sides_and_refuses_until_enabled(proxy: FaultProxy) -> None:
    with connect(proxy) as sock:
        sock.sendall(PING)
        assert read_all(sock, len(PONG)) == PONG
        proxy.cut()
        with contextlib.suppress(ConnectionResetError):
            assert sock.recv(10) == b""
    with connect(proxy) as refused, contextlib.suppress(ConnectionResetError):
        assert refused.recv(10) == b""
    proxy.enable()
    with connect(proxy) as sock:
        sock.sendall(PING)
        assert read_all(sock, len(PONG)) == PONG


def test_reset_sends_an_rst(proxy: FaultProxy) -> None:
    with connect(proxy) as sock:
        sock.sendall(PING)
        assert read_all(sock, len(PONG)) == PONG
        proxy.reset()
        with pytest.raises(ConnectionResetError):
            sock.recv(10)


@pytest.mark.parametrize("action", [Action.CUT, Action.RESET])
def test_after_n_bytes_up_the_connection_ends_there(proxy: FaultProxy, action: Action) -> None:
    with connect(proxy) as sock:
        proxy.after(3, Direction.UP, action)
        sock.sendall(PING)
        wait_until_sync(proxy.triggered, what="trigger fired")
        assert proxy.bytes[Direction.UP] == 3  # "PIN" reached Redis, "G\r\n" did not
        with contextlib.suppress(ConnectionResetError):
            assert sock.recv(10) == b""
    assert proxy.accepting  # a trigger ends one connection; the next one is let in


def test_after_n_bytes_down_a_reply_is_cut_in_the_middle(proxy: FaultProxy) -> None:
    with connect(proxy) as sock:
        proxy.after(2, Direction.DOWN, Action.CUT)
        sock.sendall(PING)
        assert read_all(sock, 10) == PONG[:2]


def test_stall_after_holds_the_rest_until_resume(proxy: FaultProxy) -> None:
    with connect(proxy) as sock:
        proxy.stall_after(2)
        sock.sendall(PING)
        wait_until_sync(proxy.stalled, what="stalled")
        assert proxy.bytes[Direction.UP] == 2 and nothing_pending(sock)
        proxy.resume()
        assert read_all(sock, len(PONG)) == PONG


@pytest.mark.parametrize("forward", [False, True])
def test_on_a_pattern_the_chunk_is_lost_or_forwarded_first(proxy: FaultProxy, forward: bool) -> None:
    with connect(proxy) as sock:
        sock.sendall(PING)
        assert read_all(sock, len(PONG)) == PONG
        proxy.on(b"INCR", Direction.UP, Action.BLACKHOLE, forward=forward)
        key = f"fault-proxy-test-{uuid.uuid4().hex}"
        sock.sendall(f"INCR {key}\r\n".encode())
        wait_until_sync(proxy.triggered, what="trigger fired")
        wait_until_sync(lambda: sum(proxy.dropped.values()) > 0, what="bytes dropped")
        assert nothing_pending(sock)
    # Forwarded: Redis ran the command whose reply was dropped. Lost: it never saw it.
    with redis.Redis.from_url(REDIS_URL) as client:
        assert client.get(key) == (b"1" if forward else None)
        client.delete(key)
    with connect(proxy) as sock:  # the next connection is not blackholed
        sock.sendall(PING)
        assert read_all(sock, len(PONG)) == PONG
