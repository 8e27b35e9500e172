"""Seeded random sessions: every reply is well-formed, none leaks an exception, the ingress stays ready."""

from __future__ import annotations

import contextlib
import random
import re
import socket

from tests.smtp_ingress.conftest import RunningIngress
from tests.smtp_ingress.rawsmtp import RawSMTP

VERBS = ["EHLO ", "HELO ", "MAIL FROM:", "RCPT TO:", "DATA", "RSET", "NOOP", "VRFY ", "AUTH ", "AUTH PLAIN ",
         "AUTH LOGIN", "STARTTLS", "HELP", "BDAT ", "XCLIENT "]  # fmt: skip
PIECES = ["<", ">", "@", "alice", "local.test", "\x00", "\r", " ", '"', "%", "!", "[1.2.3.4]", "SIZE=", "9" * 12,
          "BODY=8BITMIME", "SMTPUTF8", "ü", "=", "AGFsaWNlQGxvY2FsLnRlc3QAcHc=", ":", ",", "@a,@b:"]  # fmt: skip
REPLY_LINE = re.compile(r"^[2345]\d\d[ -]\S")


def random_session(rnd: random.Random) -> bytes:
    lines = []
    for _ in range(rnd.randint(1, 12)):
        if rnd.random() < 0.1:
            lines.append(bytes(rnd.randrange(256) for _ in range(rnd.randint(1, 60))).replace(b"\n", b""))
        else:
            text = rnd.choice(VERBS) + "".join(rnd.choice(PIECES) for _ in range(rnd.randint(0, 8)))
            lines.append(text.encode())
    return b"\r\n".join(lines) + b"\r\nQUIT\r\n"


def test_random_sessions(ingress: RunningIngress) -> None:
    rnd = random.Random(20261127)
    bad: list[str] = []
    replies_seen = 0
    for _ in range(60):
        with RawSMTP(ingress.port(rnd.choice(["smtp", "submission"]))) as raw:
            raw.send(random_session(rnd))
            with contextlib.suppress(OSError):  # the server may have closed already (421, failed STARTTLS)
                raw.sock.shutdown(socket.SHUT_WR)
            output = raw.rest().decode("utf-8", "replace")
        replies_seen += output.count("\r\n")
        bad += [line for line in output.split("\r\n") if line and not REPLY_LINE.match(line)]
        bad += [line for line in output.split("\r\n") if "Error: (" in line]
    assert bad == []
    assert replies_seen > 300  # the sessions really talked
    assert ingress.ready()
