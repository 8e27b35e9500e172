"""RCPT to an SRS address of a local domain: accepted from anyone when it verifies, refused when forged or off."""

from __future__ import annotations

from collections.abc import Callable

from pydantic import SecretStr

from services.smtp_ingress import replies
from shared.envelope import Envelope
from shared.srs import Srs
from tests.smtp_ingress.conftest import RunningIngress, read_queue

SECRET = "srs test secret"
BOUNCE = b"From: MAILER-DAEMON@remote.test\r\nSubject: Undelivered\r\n\r\nGone.\r\n"


def test_bounce_to_our_srs_address_is_queued_and_a_forged_one_refused(
    make_ingress: Callable[..., RunningIngress], accounts: None, namespace: str
) -> None:
    ingress = make_ingress(trusted_networks="", srs_secret=SECRET)
    ours = Srs(SecretStr(SECRET)).forward("someone@origin.test", "local.test")
    forged = Srs(SecretStr("guess")).forward("victim@origin.test", "local.test")
    with ingress.smtp() as client:
        client.ehlo("mx.remote.test")
        assert client.mail("<>")[0] == 250
        code, reply = client.rcpt(forged)
        assert (code, reply.decode()) == (550, str(replies.NO_SUCH_USER)[4:])
        assert client.rcpt(ours)[0] == 250
        assert client.data(BOUNCE)[0] == 250
    [queued] = read_queue(namespace)
    assert Envelope.from_headers(queued.headers).recipients == (ours,)


def test_srs_address_is_refused_when_srs_is_off(make_ingress: Callable[..., RunningIngress], accounts: None) -> None:
    ingress = make_ingress(trusted_networks="")
    ours = Srs(SecretStr(SECRET)).forward("someone@origin.test", "local.test")
    with ingress.smtp() as client:
        client.ehlo("mx.remote.test")
        client.mail("<>")
        assert client.rcpt(ours)[0] == 550
