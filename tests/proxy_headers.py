"""PROXY protocol headers (v1 text, v2 binary) from their parts; hypothesis strategies of valid and mangled ones."""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import struct
from dataclasses import dataclass

from hypothesis import strategies as st

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


@dataclass(frozen=True)
class Header:
    """What a header says: its version, the client and server endpoints (None for LOCAL / UNKNOWN), its bytes."""

    version: int
    source: ipaddress.IPv4Address | ipaddress.IPv6Address | None
    destination: ipaddress.IPv4Address | ipaddress.IPv6Address | None
    source_port: int
    destination_port: int
    raw: bytes


def v1(source: str, destination: str, source_port: int, destination_port: int) -> bytes:
    family = "TCP6" if ":" in source else "TCP4"
    return f"PROXY {family} {source} {destination} {source_port} {destination_port}\r\n".encode()


def v2(source: str, destination: str, source_port: int, destination_port: int, tlv: bytes = b"") -> bytes:
    """Version 2, command PROXY, TCP over IPv4 or IPv6, optional TLVs after the addresses."""
    six = ":" in source
    body = ipaddress.ip_address(source).packed + ipaddress.ip_address(destination).packed
    body += struct.pack("!HH", source_port, destination_port) + tlv
    return V2_SIGNATURE + bytes([0x21, 0x21 if six else 0x11]) + struct.pack("!H", len(body)) + body


def v2_local() -> bytes:
    """Version 2, command LOCAL (the balancer's own health check): no addresses."""
    return V2_SIGNATURE + bytes([0x20, 0x00]) + struct.pack("!H", 0)


ports = st.integers(0, 65535)
tlvs = st.lists(
    st.builds(
        lambda kind, value: bytes([kind]) + struct.pack("!H", len(value)) + value,
        st.integers(0, 255),
        st.binary(max_size=20),
    ),
    max_size=3,
).map(b"".join)


@st.composite
def headers(draw: st.DrawFn) -> Header:
    """A valid header of either version and family."""
    six = draw(st.booleans())
    source = draw(st.ip_addresses(v=6 if six else 4))
    destination = draw(st.ip_addresses(v=6 if six else 4))
    source_port, destination_port = draw(ports), draw(ports)
    kind = draw(st.sampled_from(["v1", "v2", "v1-unknown", "v2-local"]))
    if kind == "v1":
        raw = v1(str(source), str(destination), source_port, destination_port)
    elif kind == "v2":
        raw = v2(str(source), str(destination), source_port, destination_port, draw(tlvs))
    elif kind == "v1-unknown":
        return Header(1, None, None, 0, 0, b"PROXY UNKNOWN\r\n")
    else:
        return Header(2, None, None, 0, 0, v2_local())
    return Header(1 if kind == "v1" else 2, source, destination, source_port, destination_port, raw)


@st.composite
def mangled(draw: st.DrawFn) -> bytes:
    """A valid header with bytes flipped, cut, inserted or dropped; or plain garbage; or an SMTP/POP3 command."""
    raw = bytearray(draw(headers()).raw)
    how = draw(st.sampled_from(["flip", "cut", "insert", "garbage", "command", "long"]))
    if how == "flip" and raw:
        at = draw(st.integers(0, len(raw) - 1))
        raw[at] ^= draw(st.integers(1, 255))
    elif how == "cut":
        del raw[draw(st.integers(0, len(raw))) :]
    elif how == "insert":
        at = draw(st.integers(0, len(raw)))
        raw[at:at] = draw(st.binary(min_size=1, max_size=8))
    elif how == "garbage":
        return draw(st.binary(max_size=120))
    elif how == "command":
        return draw(st.sampled_from([b"EHLO x\r\n", b"USER alice\r\n", b"PROXY\r\n", b"PROXY TCP4\r\n", b"\r\n"]))
    else:
        return b"PROXY TCP4 " + b"1" * draw(st.integers(100, 70000)) + b"\r\n"
    return bytes(raw)


def talk(port: int, data: bytes, end: bool, quit: bytes = b"\r\nQUIT\r\n") -> bytes:
    """Open a connection, send `data`, and return all the server says until it closes: after a greeting line the
    session is ended with `quit` (its CRLF first ends whatever bytes followed the header). With `end`, the sending
    side is shut after `data` (a header cut short must meet an end of stream, not wait for the header timeout);
    without, it stays open so no EOF races the greeting."""
    received = b""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        with contextlib.suppress(OSError):  # the server may have closed (or reset) already
            sock.sendall(data)
            if end:
                sock.shutdown(socket.SHUT_WR)
        with contextlib.suppress(ConnectionResetError):
            while b"\r\n" not in received and (chunk := sock.recv(65536)):
                received += chunk
            if received:
                with contextlib.suppress(OSError):
                    sock.sendall(quit)
                while chunk := sock.recv(65536):
                    received += chunk
    return received
