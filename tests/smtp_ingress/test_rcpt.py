"""RCPT policy reads the store once per recipient (Accounts.lookup) and decides as before."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from services.smtp_ingress import replies
from services.smtp_ingress.handler import IngressHandler
from services.store.accounts import AddressFacts
from tests.smtp_ingress.conftest import ingress_settings


class _Accounts:
    """The store's account facts for local.test (alice, sales -> alice); records every call."""

    def __init__(self, catch_all: bool = False) -> None:
        self.calls: list[str] = []
        self.catch_all = catch_all

    async def lookup(self, address: str) -> AddressFacts:
        self.calls.append("lookup")
        address = address.strip().lower()
        domain = address.rpartition("@")[2]
        local = domain == "local.test"
        return AddressFacts(
            local_domain=local,
            user=local and address == "alice@local.test",
            aliases=["alice@local.test"] if address == "sales@local.test" else None,
            catch_all=["alice@local.test"] if local and self.catch_all else None,
        )

    async def is_local_domain(self, domain: str) -> bool:
        self.calls.append("is_local_domain")
        return domain.strip().lower() == "local.test"


def _rcpt(accounts: _Accounts, address: str, *, trusted: bool = False, authenticated: bool = False) -> Any:
    handler = IngressHandler(ingress_settings("unused"), SimpleNamespace(accounts=accounts), None, None)  # type: ignore[arg-type]
    server = SimpleNamespace(trusted=trusted, client_ip="192.0.2.7", requires_auth=False)
    session = SimpleNamespace(authenticated=authenticated)
    envelope = SimpleNamespace(rcpt_tos=[], rcpt_options=[], smtp_utf8=False)
    return handler.handle_RCPT(server, session, envelope, address, [])


@pytest.mark.parametrize(
    ("address", "trusted", "authenticated", "catch_all", "expected"),
    [
        ("alice@local.test", False, False, False, replies.RECIPIENT_OK),
        ("ALICE@Local.TEST", False, False, False, replies.RECIPIENT_OK),
        ("sales@local.test", False, False, False, replies.RECIPIENT_OK),
        ("nobody@local.test", False, False, False, replies.NO_SUCH_USER),
        ("nobody@local.test", True, True, False, replies.NO_SUCH_USER),  # local: never relayed, trusted or not
        ("nobody@local.test", False, False, True, replies.RECIPIENT_OK),
        ("someone@remote.example", False, False, False, replies.RELAY_DENIED),
        ("someone@remote.example", True, False, False, replies.RECIPIENT_OK),
        ("someone@remote.example", False, True, False, replies.RECIPIENT_OK),
    ],
)
async def test_rcpt_decides_with_one_lookup(
    address: str, trusted: bool, authenticated: bool, catch_all: bool, expected: replies.Reply
) -> None:
    accounts = _Accounts(catch_all)
    assert await _rcpt(accounts, address, trusted=trusted, authenticated=authenticated) == expected
    assert accounts.calls == ["lookup"]


async def test_trailing_dot_domain_is_local_as_before() -> None:
    # aiosmtpd's parser refuses such an address before the hook; the hook still decides locality as it did
    # (split_domain drops the dot), so a trusted client can never relay to a local domain by adding one.
    accounts = _Accounts()
    assert await _rcpt(accounts, "alice@local.test.", trusted=True) == replies.NO_SUCH_USER
    assert accounts.calls == ["lookup", "is_local_domain"]
