"""bench.reference end to end at a tiny size: a private Postfix delivering through a private Dovecot's LMTP, and a
private Dovecot served to the POP3 load generator; every message must arrive (or come back) and be metered.

Needs root (Postfix and Dovecot switch users) and Debian's postfix, dovecot-core, -pop3d and -lmtpd (Makefile
TEST_TOOLS); skipped otherwise."""

from __future__ import annotations

import os
import shutil

import pytest

from bench import reference
from tests.dovecot import INSTALLED

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="Postfix and Dovecot need root"),
    pytest.mark.skipif(not INSTALLED or not shutil.which("smtp-source"), reason="postfix or dovecot not installed"),
    pytest.mark.xdist_group("reference"),
    pytest.mark.timeout(300),
]


@pytest.mark.parametrize("socket", ["unix", "inet"])
def test_postfix_delivers_every_message_through_dovecot_lmtp(socket: str) -> None:
    argv = ["postfix", "--messages", "30", "--sessions", "5", "--delivery", "lmtp", "--lmtp-socket", socket]
    result = reference.run(reference.build_parser().parse_args(argv))
    assert result["check"] == {"in_maildir": 30, "left_in_queue": 0, "dovecot_index": True}
    assert result["lmtp"].startswith(f"lmtp:{socket}:")
    # Both process trees are metered, each exactly (ended workers through their parents' reaped time).
    assert set(result["cpu_ms_per_msg_by_server"]) == {"postfix", "dovecot"}
    assert result["cpu_ms_per_msg"] == pytest.approx(sum(result["cpu_ms_per_msg_by_server"].values()), abs=0.01)


def test_dovecot_serves_every_message_to_the_load_generator() -> None:
    argv = ["dovecot", "--sessions", "4", "--messages", "6", "--size", "4096", "--clients", "2", "--scheme", "plain"]
    result = reference.run(reference.build_parser().parse_args(argv))
    assert result["messages"] == 24
    assert [p["pass"] for p in result["passes"]] == [1, 2]
    assert all(p["load_clients"] == 2 and p["msg_per_s"] > 0 for p in result["passes"])
