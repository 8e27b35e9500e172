"""Send limits on 587/465 and the connection rate on port 25, through real SMTP sessions on the real Redis."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest

from services.smtp_ingress import metrics, replies
from services.smtp_ingress.limits import Limits
from services.store import parse_rate
from services.store.ratelimit import Verdict
from tests.smtp_ingress.conftest import (
    ALICE,
    BOB,
    PASSWORD,
    SIMPLE_MESSAGE,
    RunningIngress,
    read_queue,
    run_store,
)


def _hits(limit: str) -> float:
    return float(metrics.LIMIT_HITS.labels(limit)._value.get())


def _submit(ingress: RunningIngress, recipients: list[str], listener: str = "smtps") -> tuple[int, str]:
    """One authenticated transaction; the reply to DATA (354 means the message went on and was queued)."""
    with ingress.smtp(listener) as client:
        client.login(ALICE, PASSWORD)
        assert client.mail(ALICE)[0] == 250
        for rcpt in recipients:
            assert client.rcpt(rcpt)[0] == 250
        code, text = client.docmd("DATA")
        if code == 354:
            client.send(SIMPLE_MESSAGE + b".\r\n")
            code, text = client.getreply()
            assert code == 250, text
            return 354, text.decode()
        return code, text.decode()


def test_send_limit_refuses_at_data_with_the_limit_named(
    make_ingress: Callable[..., RunningIngress], accounts: None, namespace: str
) -> None:
    ingress = make_ingress(send_limit="2/1h")
    before = _hits("send_messages")
    assert _submit(ingress, [BOB])[0] == 354
    assert _submit(ingress, [BOB], listener="smtps")[0] == 354
    code, text = _submit(ingress, [BOB])
    assert (code, text) == (451, str(replies.send_limit_exceeded("messages", "2/1h"))[4:])
    assert "4.7.1" in text and "2/1h messages" in text
    assert _hits("send_messages") == before + 1
    assert len(read_queue(namespace, count=3, timeout=2)) == 2  # the refused one was never queued


def test_an_accounts_own_limit_and_recipients(
    make_ingress: Callable[..., RunningIngress], accounts: None, namespace: str
) -> None:
    ingress = make_ingress(send_limit="100,3/1h")
    before = _hits("send_recipients")
    assert _submit(ingress, [BOB, "sales@local.test"])[0] == 354
    code, text = _submit(ingress, [BOB, ALICE])
    assert code == 451 and "3/1h recipients" in text
    assert _hits("send_recipients") == before + 1
    code, text = _submit(ingress, [BOB, ALICE, "sales@local.test", "x@remote.test"])
    assert code == 550 and "5.7.1" in text  # more recipients than the limit allows at all: waiting never helps

    run_store(namespace, lambda store: store.accounts.set_send_limit(ALICE, parse_rate("1/1d")))
    assert _submit(ingress, [BOB])[0] == 354
    code, text = _submit(ingress, [BOB])
    assert code == 451 and "1/1d messages" in text


def test_two_replicas_share_one_limit(
    make_ingress: Callable[..., RunningIngress], accounts: None, namespace: str
) -> None:
    first, second = make_ingress(send_limit="3/1h"), make_ingress(send_limit="3/1h")
    codes = [_submit(replica, [BOB])[0] for replica in (first, second, first, second)]
    assert codes == [354, 354, 354, 451]


def test_unauthenticated_mail_is_not_send_limited(
    make_ingress: Callable[..., RunningIngress], accounts: None, namespace: str
) -> None:
    ingress = make_ingress(send_limit="1/1h")
    for _ in range(3):
        with ingress.smtp("smtp") as client:
            assert client.sendmail("someone@remote.test", [BOB], SIMPLE_MESSAGE) == {}


def _mail_reply(ingress: RunningIngress) -> tuple[int, str]:
    with ingress.smtp("smtp") as client:
        client.ehlo("client.example.org")
        code, text = client.mail("someone@remote.test")
        return code, text.decode()


def test_mx_connection_rate_per_client(make_ingress: Callable[..., RunningIngress], accounts: None) -> None:
    ingress = make_ingress(mx_connection_rate="2/1m", trusted_networks="")
    before = _hits("mx_connections")
    assert [_mail_reply(ingress)[0] for _ in range(2)] == [250, 250]
    code, text = _mail_reply(ingress)
    assert code == 451 and text == str(replies.connection_rate_exceeded("2/1m"))[4:]
    assert _hits("mx_connections") == before + 1
    # The submission port is not counted: the account's limits apply there.
    with ingress.smtp("smtps") as client:
        client.login(ALICE, PASSWORD)
        assert client.mail(ALICE)[0] == 250


def test_trusted_networks_are_exempt_from_the_connection_rate(
    make_ingress: Callable[..., RunningIngress], accounts: None
) -> None:
    ingress = make_ingress(mx_connection_rate="1/1m")  # 127.0.0.0/8 is trusted by default
    assert [_mail_reply(ingress)[0] for _ in range(3)] == [250, 250, 250]


class _BrokenLimiter:
    """A Redis that cannot count (refusing writes, unreachable)."""

    async def send(self, account: str, recipients: int, default: Any) -> Verdict:
        raise ConnectionError("redis is down")

    async def connection(self, client: str, rate: Any) -> Verdict:
        await asyncio.sleep(10)  # hangs: the check's own timeout ends it
        raise AssertionError("unreachable")


async def test_limits_fail_open_and_count_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("services.smtp_ingress.limits.TIMEOUT", 0.05)
    limits = Limits(_BrokenLimiter(), parse_rate("1/1h"), parse_rate("1/1m"))  # type: ignore[arg-type]
    send_errors = metrics.LIMIT_ERRORS.labels("send")._value.get()
    mx_errors = metrics.LIMIT_ERRORS.labels("mx_connections")._value.get()
    assert await limits.check_send(ALICE, 1) is None
    assert await limits.check_connection("192.0.2.1") is None
    assert metrics.LIMIT_ERRORS.labels("send")._value.get() == send_errors + 1
    assert metrics.LIMIT_ERRORS.labels("mx_connections")._value.get() == mx_errors + 1


def test_handler_skips_limits_for_unauthenticated_data() -> None:
    async def check() -> None:
        from services.smtp_ingress.handler import IngressHandler
        from tests.smtp_ingress.conftest import ingress_settings

        checks = SimpleNamespace(before_data=None)  # never called
        handler = IngressHandler(ingress_settings("unused"), None, None, None, checks)  # type: ignore[arg-type]
        session = SimpleNamespace(authenticated=False)
        assert await handler.check_DATA(None, session, SimpleNamespace(rcpt_tos=[BOB])) is None

    asyncio.run(check())
