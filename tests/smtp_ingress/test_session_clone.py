"""A session cloned from a listener's pristine session is indistinguishable from one built by aiosmtpd."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from typing import Any, cast

import pytest
from aiosmtpd.smtp import SMTP

from services.smtp_ingress import metrics, replies
from services.smtp_ingress.config import parse_networks
from services.smtp_ingress.policy import client_ip, is_trusted
from services.smtp_ingress.session import _CLIENT_CACHE_SIZE, IngressSMTP, SessionRegistry, plain_path
from shared.limits import ConnectionLimiter


class _Handler:
    async def handle_EHLO(self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]) -> Any:
        return responses

    async def auth_PLAIN(self, server: Any, args: list[str]) -> Any:
        return None


def _session() -> IngressSMTP:
    registry = SessionRegistry(ConnectionLimiter(10, 10), (), 3, 60.0)
    return IngressSMTP(
        _Handler(), registry=registry, listener="smtp", hostname="mx.test", loop=asyncio.get_running_loop()
    )


async def test_clone_has_fresh_connection_state_and_bound_methods() -> None:
    template = _session()
    clone, other = template.clone(), template.clone()
    assert set(vars(clone)) == set(vars(_session()))
    # Per-connection objects are new for each clone; configuration is shared.
    for name in ("_stream_reader_wr", "_closed", "command_size_limits", "_smtp_methods"):
        assert getattr(clone, name) is not getattr(template, name)
        assert getattr(clone, name) is not getattr(other, name)
    assert clone._handle_hooks is template._handle_hooks
    assert clone._active_sessions is template._active_sessions  # label children bound once per listener
    methods: Any = clone._smtp_methods  # a mapping of verbs that also knows its session (session.py)
    assert methods.session is clone
    assert methods.verbs is cast(Any, template._smtp_methods).verbs
    assert {"EHLO", "MAIL", "RCPT", "DATA", "QUIT"} <= methods.verbs
    # A verb's guarded method is made on its first use, once per session.
    assert dict(methods) == {}
    assert methods.get("MAIL") is methods.get("MAIL")
    assert methods.get("MAIL").func.__self__ is clone
    # Any other verb is answered by the session, not aiosmtpd, and is not kept.
    assert methods.get("NOSUCH").args == (replies.UNRECOGNISED,)
    assert methods.get("NO\x00SUCH").args == (replies.CONTROL_CHARACTERS,)
    assert set(methods) == {"MAIL"}
    # aiosmtpd's built-in LOGIN is bound to the clone; the handler's PLAIN is the handler's.
    assert clone._auth_methods["LOGIN"].method.__self__ is clone
    assert clone._auth_methods["PLAIN"].method.__self__ is template.event_handler
    assert clone.session is None and clone.envelope is None and clone.transport is None
    assert clone._admitted is None and clone.stage == "connect"


async def test_every_verb_is_a_label_of_the_commands_metric() -> None:
    """postroom_smtp_commands_total{command} takes a verb from a fixed set: a new smtp_<VERB> must join it."""
    assert set(cast(Any, _session()._smtp_methods).verbs) == set(metrics.COMMANDS) - {"other"}


def _outcome(parse: Callable[[str], Any], arg: str) -> Any:
    try:
        return parse(arg)
    except (IndexError, AttributeError):  # aiosmtpd's parser raises them on some odd paths (e.g. "<"): bad syntax
        return None, None


# Odd inputs around the fast path's edges: every one must get exactly aiosmtpd's answer.
ODD_PATHS = [
    "",
    " ",
    "<>",
    "<> SIZE=1",
    "<",
    ">",
    "<bad",
    "a@b.test",
    "a@b.test SIZE=1",
    " <a@b.test>",
    "<a@b.test> ",
    "<a@b.test>",
    "<a@b.test> SIZE=10",
    "<a@b.test>\tSIZE=10 BODY=8BITMIME",
    "<a@b.test>   SIZE=10  ",
    "<a@b.test>SIZE=10",
    "<a@b.test>>",
    "<a@b.test><c@d>",
    "<a@b.test> <c@d>",
    "<a@b.test>(comment)",
    "<a@b.test> (comment) SIZE=1",
    "<a@b.test>\u2003SIZE=1",
    "<a@b.test> \u2003SIZE=1",
    "<a@b.test>\x1cX",
    "<a@b.test> \x1cX",
    "<@x:a@b.test>",
    "<@x,@y:a@b.test>",
    '<"q x"@b>',
    '<"a"@b.test>',
    '<"a\\"b"@c>',
    "<a.b.c@d.e.f>",
    "<a..b@c>",
    "<.a@c>",
    "<a.@c>",
    "<a@b..c>",
    "<a@.b>",
    "<a@b.>",
    "<a@b.test.>",
    "<a@-b>",
    "<a@b-.c>",
    "<a@1.2.3.4>",
    "<a@[192.0.2.1]>",
    "<a@[IPv6:::1]>",
    "<a@b@c>",
    "<@b.test>",
    "<a@>",
    "<a>",
    "<a@b.test",
    "<a (c)@b.test>",
    "<a@b.test (c)>",
    "< a@b.test>",
    "<a@ b.test>",
    "<a @b.test>",
    "<=?utf-8?q?a?=@b.test>",
    "<a=?b@c>",
    "<a=?utf-8?q?x?=@b>",
    "<?=@b>",
    "<=@b>",
    "<a?b@c>",
    "<!#$%&'*+/=?^_`{|}~-@b.test>",
    "<a+tag@b.test>",
    "<a%b@c.test>",
    "<b!a@c.test>",
    "<jürgen@b.test>",
    "<a@bücher.test>",
    "<A.B@EXAMPLE.TEST>",
    "<a\\b@c>",
    "<a,b@c>",
    "<a;b@c>",
    "<a:b@c>",
    "<a[b@c>",
    "<a]b@c>",
    "<a(b@c>",
    "<a)b@c>",
    "<a<b@c>",
    "<a>b@c>",
    '<a"b@c>',
    "<<a@b>>",
    "<a@b>\r\n",
    "<" + "x" * 64 + "@b.test>",
    "<" + "x" * 65 + "@b.test>",
    "<" + "x" * 300 + "@" + "d" * 300 + ">",
]
_LOCALS = ["a", "a.b", "a..b", ".a", "a.", "=?", "a=?b", "a=b", "é", "a b", '"a"', "a(c)", "-", "x" * 70, ""]
_DOMAINS = ["b", "b.test", "b..test", ".b", "b.", "-b-", "1.2.3.4", "[1.2.3.4]", "b_c.test", "ü.test", ""]
_TAILS = ["", " ", "  SIZE=1", "SIZE=1", "\tX", " (c)", "(c)", " \u00a0X", ">", " <x@y>", " a b  "]
_ALPHABET = 'ab.@<> \t()"\\[],:;=?-_+é\u2003\x1c%!'


def _generated_paths() -> list[str]:
    paths = [f"<{local}@{domain}>{tail}" for local in _LOCALS for domain in _DOMAINS for tail in _TAILS]
    chance = random.Random(8)
    for _ in range(3000):
        body = "".join(chance.choice(_ALPHABET) for _ in range(chance.randint(1, 14)))
        paths.append(("<" if chance.random() < 0.7 else "") + body)
    return paths


@pytest.mark.parametrize("local_part_limit", [0, 64])
async def test_getaddr_matches_aiosmtpd(local_part_limit: int) -> None:
    session = _session()
    session.local_part_limit = local_part_limit
    for arg in [*ODD_PATHS, *_generated_paths()]:
        ours = _outcome(session._getaddr, arg)
        assert ours == _outcome(lambda a: SMTP._getaddr(session, a), arg), repr(arg)


def test_plain_paths_take_the_fast_path() -> None:
    assert plain_path("<load@remote.test>") == ("load@remote.test", "")
    assert plain_path("<a.b+c@d-e.f.test> SIZE=1024 BODY=8BITMIME") == ("a.b+c@d-e.f.test", "SIZE=1024 BODY=8BITMIME")
    for odd in ["", "a@b.test", "<>", '<"a"@b>', "<@x:a@b>", "<a@b.test> (c)", "<jürgen@b.test>", "<=?x?=@b>"]:
        assert plain_path(odd) is None, odd


def test_registry_remembers_client_facts_per_host() -> None:
    networks = parse_networks("127.0.0.0/8,::1/128,2001:db8::/32")
    registry = SessionRegistry(ConnectionLimiter(10, 10), networks, 3, 60.0)
    peers: list[object] = [
        ("127.0.0.1", 40000),
        ("192.0.2.7", 40001),
        ("::1", 40002, 0, 0),
        ("::ffff:127.0.0.1", 40003, 0, 0),
        ("fe80::1%eth0", 40004, 0, 2),
        ("2001:db8::5", 40005, 0, 0),
        ("not-an-ip", 1),
        (),
        None,
        "/run/socket",
    ]
    for peer in peers:
        expected_ip = client_ip(peer)
        assert registry.client(peer) == (expected_ip, is_trusted(expected_ip, networks)), peer
        assert registry.client(peer) is registry.client(peer)  # the second answer comes from the cache
    assert registry.client(("192.0.2.7", 1)) == ("192.0.2.7", False)
    for n in range(_CLIENT_CACHE_SIZE + 5):  # bounded however many hosts connect
        registry.client((f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}", 1))
    assert len(registry._clients) <= _CLIENT_CACHE_SIZE


class _Clock:
    """Just enough of an event loop for the command timer: a settable time and the timers armed."""

    def __init__(self) -> None:
        self.now = 0.0
        self.armed: list[asyncio.TimerHandle] = []

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Callable[[], None]) -> asyncio.TimerHandle:
        handle = asyncio.TimerHandle(when, callback, (), asyncio.get_running_loop())
        self.armed.append(handle)
        return handle

    def fire_due(self) -> None:
        for handle in list(self.armed):
            if handle.when() <= self.now and not handle.cancelled():
                self.armed.remove(handle)
                handle._run()


async def test_command_timer_moves_its_deadline_instead_of_rearming() -> None:
    session = _session()
    clock = _Clock()
    session.loop = clock  # type: ignore[assignment]
    session._timeout_duration = 300.0
    timeouts: list[float] = []
    session._timeout_cb = lambda: timeouts.append(clock.now)  # type: ignore[method-assign]
    session._reset_timeout()
    for now in (10.0, 100.0, 250.0):  # commands keep the session alive: still the one timer
        clock.now = now
        session._reset_timeout()
    assert len(clock.armed) == 1
    clock.now = 300.0
    clock.fire_due()  # fires early: re-armed for the rest, no timeout
    assert timeouts == [] and [h.when() for h in clock.armed] == [550.0]
    clock.now = 549.0
    clock.fire_due()
    assert timeouts == []
    clock.now = 550.0
    clock.fire_due()
    assert timeouts == [550.0]
    # A shorter duration (aiosmtpd's PROXY header wait) must not wait for a later timer.
    session._reset_timeout()
    session._reset_timeout(10.0)
    assert [h.when() for h in clock.armed if not h.cancelled()] == [560.0]
    clock.now = 560.0
    clock.fire_due()
    assert timeouts == [550.0, 560.0]
    # aiosmtpd cancels the handle when the connection is lost; a reset after that arms a new one.
    assert session._timeout_handle is not None
    session._timeout_handle.cancel()
    session._reset_timeout()
    assert [h.when() for h in clock.armed if not h.cancelled()] == [860.0]
