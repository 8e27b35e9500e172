"""A raw SMTP client over a socket, for what smtplib will not send: pipelined batches, bare CR/LF, NUL bytes."""

from __future__ import annotations

import socket

from tests.helpers import client_tls


class RawSMTP:
    """Sends bytes as given and reads replies line by line."""

    def __init__(self, port: int, timeout: float = 10, source: str | None = None, header: bytes = b"") -> None:
        """Connect (from the loopback address `source`, if given) and send `header` (e.g. a PROXY header) first."""
        address = None if source is None else (source, 0)
        self.sock: socket.socket = socket.create_connection(("127.0.0.1", port), timeout, address)
        if header:
            self.sock.sendall(header)
        self.file = self.sock.makefile("rb")

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def line(self) -> str:
        return self.file.readline().decode("utf-8", "replace").rstrip("\r\n")

    def reply(self) -> str:
        """One complete (possibly multi-line) reply; its lines joined by newlines."""
        lines = [self.line()]
        while len(lines[-1]) > 3 and lines[-1][3] == "-":
            lines.append(self.line())
        return "\n".join(lines)

    def command(self, text: str) -> str:
        self.send(text.encode() + b"\r\n")
        return self.reply()

    def rest(self) -> bytes:
        """Everything until the server closes the connection."""
        return self.file.read()

    def starttls(self) -> None:
        self.file.close()
        self.sock = client_tls().wrap_socket(self.sock, server_hostname="mx.postroom.test")
        self.file = self.sock.makefile("rb")

    def close(self) -> None:
        self.file.close()
        self.sock.close()

    def __enter__(self) -> RawSMTP:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
