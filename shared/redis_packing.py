"""redis-py's asyncio connections with hiredis's C command packer, which redis-py's own sync client already uses.

redis-py's asyncio connection packs every command in Python (`pack_command`: an encode and a few joins per
argument), 3-8 µs a command against hiredis's 0.5-1.3 µs; in the delivery's profile the packing was 6.5% of its
CPU. The Python packer stays for what hiredis would treat differently: an argument that is not str, bytes, int or
float (redis-py converts a memoryview and refuses a bool or None with its own DataError), a command name with a
space in it ("CONFIG GET", which redis-py splits into words), and a large value, which redis-py hands to the socket
as a buffer of its own where hiredis would copy it into one (a 25 MiB message body would be copied once more).
"""

from __future__ import annotations

from typing import Any

import hiredis
from redis.asyncio.connection import AbstractConnection, Connection, SSLConnection, UnixDomainSocketConnection

# redis-py's own threshold (`_buffer_cutoff`) above which it stops copying a value into the command's buffer.
COPY_LIMIT = 6000


def hiredis_packable(args: tuple[Any, ...]) -> bool:
    """True when hiredis packs `args` exactly as redis-py's Python packer would, without copying a large value."""
    first = args[0]
    if type(first) is str and " " in first:
        return False
    for arg in args:
        kind = type(arg)
        if kind is bytes or kind is str:
            if len(arg) > COPY_LIMIT:
                return False
        elif kind is not int and kind is not float:
            return False
    return True


def _pack_command(self: AbstractConnection, *args: Any) -> list[bytes]:
    """hiredis's packing where it matches redis-py's, else redis-py's own (`AbstractConnection.pack_command`)."""
    if hiredis_packable(args):
        return [hiredis.pack_command(args)]
    return AbstractConnection.pack_command(self, *args)


class HiredisConnection(Connection):
    """A TCP connection (redis://) that packs commands with hiredis."""

    pack_command = _pack_command


class HiredisSSLConnection(SSLConnection):
    """A TLS connection (rediss://) that packs commands with hiredis."""

    pack_command = _pack_command


class HiredisUnixConnection(UnixDomainSocketConnection):
    """A Unix socket connection (unix://) that packs commands with hiredis."""

    pack_command = _pack_command


_HIREDIS_VARIANT: dict[type[AbstractConnection], type[AbstractConnection]] = {
    Connection: HiredisConnection,
    SSLConnection: HiredisSSLConnection,
    UnixDomainSocketConnection: HiredisUnixConnection,
}


def with_hiredis_packing(connection_class: type[AbstractConnection]) -> type[AbstractConnection]:
    """The hiredis-packing variant of one of redis-py's connection classes; any other class as it is."""
    return _HIREDIS_VARIANT.get(connection_class, connection_class)
