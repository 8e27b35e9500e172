"""PROXY protocol headers written by hand, and smtplib/poplib clients that send one before anything else (before
the TLS handshake on the implicit-TLS ports), as a load balancer does on behalf of its client."""

from __future__ import annotations

import ipaddress
import poplib
import smtplib
import socket
import struct
from typing import Any

from tests.helpers import client_tls

# Tests play the load balancer from this loopback address (POSTROOM_PROXY_TRUSTED_NETWORKS=127.0.0.2/32) and an
# outsider from 127.0.0.1; Linux routes all of 127.0.0.0/8 to the loopback interface.
BALANCER = "127.0.0.2"
BALANCER_NETWORK = f"{BALANCER}/32"
OUTSIDER = "127.0.0.1"

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


def v1_header(client: str, port: int = 25, client_port: int = 40000) -> bytes:
    family = "TCP6" if ":" in client else "TCP4"
    destination = "::1" if ":" in client else "127.0.0.1"
    return f"PROXY {family} {client} {destination} {client_port} {port}\r\n".encode()


def v2_header(client: str, port: int = 25, client_port: int = 40000) -> bytes:
    """A v2 PROXY command for TCP over IPv4 or IPv6."""
    source = ipaddress.ip_address(client)
    family = 0x11 if source.version == 4 else 0x21  # TCP over AF_INET / AF_INET6
    destination = ipaddress.ip_address("127.0.0.1" if source.version == 4 else "::1")
    body = source.packed + destination.packed + struct.pack("!HH", client_port, port)
    return V2_SIGNATURE + bytes([0x21, family]) + struct.pack("!H", len(body)) + body


V1_UNKNOWN = b"PROXY UNKNOWN\r\n"
# v2 LOCAL: what a balancer sends on its own health checks (no addresses).
V2_LOCAL = V2_SIGNATURE + bytes([0x20, 0x00]) + struct.pack("!H", 0)


def connect_from(source: str, port: int, timeout: float = 10) -> socket.socket:
    """A TCP connection to 127.0.0.1:`port` whose source address is `source`."""
    return socket.create_connection(("127.0.0.1", port), timeout=timeout, source_address=(source, 0))


def proxied_socket(port: int, header: bytes, source: str = BALANCER, timeout: float = 10) -> socket.socket:
    sock = connect_from(source, port, timeout)
    sock.sendall(header)
    return sock


class ProxiedSMTP(smtplib.SMTP):
    """smtplib.SMTP that connects from `source` and writes `header` first."""

    def __init__(self, header: bytes, port: int, source: str = BALANCER, timeout: float = 10) -> None:
        self.header = header
        super().__init__("127.0.0.1", port, timeout=timeout, source_address=(source, 0))

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        sock = socket.create_connection((host, port), timeout, self.source_address)
        sock.sendall(self.header)
        return sock


class ProxiedSMTP_SSL(smtplib.SMTP_SSL):
    """smtplib.SMTP_SSL whose TLS handshake follows the PROXY header, as behind a balancer in front of port 465."""

    def __init__(self, header: bytes, port: int, source: str = BALANCER, timeout: float = 10) -> None:
        self.header = header
        super().__init__("127.0.0.1", port, timeout=timeout, source_address=(source, 0), context=client_tls())

    def _get_socket(self, host: str, port: int, timeout: float) -> Any:
        sock = socket.create_connection((host, port), timeout, self.source_address)
        sock.sendall(self.header)
        return self.context.wrap_socket(sock, server_hostname=host)


class ProxiedPOP3(poplib.POP3):
    """poplib.POP3 that connects from `source` and writes `header` first."""

    def __init__(self, header: bytes, port: int, source: str = BALANCER, timeout: float = 10) -> None:
        self.header = header
        self.source = source
        super().__init__("127.0.0.1", port, timeout=timeout)

    def _create_socket(self, timeout: float) -> socket.socket:
        sock = socket.create_connection((self.host, self.port), timeout, (self.source, 0))
        sock.sendall(self.header)
        return sock


class ProxiedPOP3_SSL(poplib.POP3_SSL):
    """poplib.POP3_SSL whose TLS handshake follows the PROXY header, as behind a balancer in front of port 995."""

    def __init__(self, header: bytes, port: int, source: str = BALANCER, timeout: float = 10) -> None:
        self.header = header
        self.source = source
        self.tls = client_tls()
        super().__init__("127.0.0.1", port, timeout=timeout, context=self.tls)

    def _create_socket(self, timeout: float) -> Any:
        sock = socket.create_connection((self.host, self.port), timeout, (self.source, 0))
        sock.sendall(self.header)
        return self.tls.wrap_socket(sock, server_hostname=self.host)


def read_all(sock: socket.socket, timeout: float = 15) -> bytes:
    """Everything the server sends until it closes (b"" for a connection dropped without a word)."""
    sock.settimeout(timeout)
    data = b""
    try:
        while chunk := sock.recv(4096):
            data += chunk
    except ConnectionResetError:
        pass
    return data


def read_line(sock: socket.socket, timeout: float = 15) -> bytes:
    """One CRLF-terminated line (b"" if the server closes first)."""
    sock.settimeout(timeout)
    data = b""
    while not data.endswith(b"\r\n"):
        try:
            chunk = sock.recv(1)
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk
    return data
