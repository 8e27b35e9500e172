"""hiredis packs a command byte for byte as redis-py's Python packer does, or leaves it to that packer."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from redis.asyncio.connection import Connection, SSLConnection, UnixDomainSocketConnection
from redis.exceptions import DataError

from shared.connections import connect_redis
from shared.redis_packing import COPY_LIMIT, HiredisConnection, hiredis_packable

PYTHON = Connection()
HIREDIS = HiredisConnection()

argument = st.one_of(
    st.binary(max_size=64),
    st.text(max_size=32),
    st.integers(min_value=-(2**63), max_value=2**64),
    st.floats(allow_nan=False),
)


def wire(connection: Connection, *args: Any) -> bytes:
    return b"".join(connection.pack_command(*args))


@given(st.sampled_from(["SET", "EVALSHA", "HSET", b"RPUSH"]), st.lists(argument, max_size=8))
def test_every_packable_command_is_packed_as_redis_py_packs_it(name: str | bytes, args: list[Any]) -> None:
    assert wire(HIREDIS, name, *args) == wire(PYTHON, name, *args)


@pytest.mark.parametrize(
    "args",
    [
        ("CONFIG GET", "maxmemory"),  # redis-py splits the words of a command name
        ("SET", "k", memoryview(b"value")),
        ("SET", "k", bytearray(b"value")),
        ("SET", "k", b"x" * (COPY_LIMIT + 1)),  # redis-py sends a large value as a buffer of its own
        ("SET", "k", "x" * (COPY_LIMIT + 1)),
    ],
)
def test_what_hiredis_would_pack_otherwise_goes_to_redis_py(args: tuple[Any, ...]) -> None:
    assert not hiredis_packable(args)
    assert HIREDIS.pack_command(*args) == PYTHON.pack_command(*args)


@pytest.mark.parametrize("value", [True, None, object()])
def test_a_value_redis_py_refuses_is_still_its_data_error(value: object) -> None:
    with pytest.raises(DataError):
        HIREDIS.pack_command("SET", "k", value)


def test_a_string_that_is_not_unicode_text_is_refused_as_before() -> None:
    with pytest.raises(UnicodeEncodeError):
        HIREDIS.pack_command("SET", "k", "\udcff")


@pytest.mark.parametrize(
    ("url", "base"),
    [
        ("redis://127.0.0.1:6379/0", Connection),
        ("rediss://127.0.0.1:6379/0", SSLConnection),
        ("unix:///run/redis.sock", UnixDomainSocketConnection),
    ],
)
def test_every_scheme_gets_the_hiredis_variant_of_its_connection(url: str, base: type[Connection]) -> None:
    connection_class = connect_redis(url).connection_pool.connection_class
    assert issubclass(connection_class, base) and connection_class is not base
    assert connection_class.pack_command is not base.pack_command
