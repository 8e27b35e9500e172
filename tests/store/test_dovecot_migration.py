"""Migration with real Dovecot: mail delivered by its LMTP, read over its POP3, imported, then read over Postroom's
POP3 (same messages, same UIDLs); exported again as a maildir that Dovecot serves with the same UIDLs."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from services.store import Store
from tests.dovecot import INSTALLED, PrivateDovecot
from tests.helpers import REDIS_URL
from tests.store.migration import DOMAIN, PASSWORD, postroom_cli, postroom_messages, postroom_pop3

pytestmark = pytest.mark.skipif(not INSTALLED, reason="Dovecot is not installed (make test-tools)")

ALICE = f"alice@{DOMAIN}"
MESSAGES = [
    b"From: bob@example.org\r\nTo: alice@migrate.test\r\nSubject: first\r\n\r\nHello.\r\n",
    # LF line ends, a dot line and a body line starting with "From ": each must come back byte for byte.
    b"From: carol@example.org\nSubject: second\n\nFrom the start\n.\n..two dots\nend\n",
    b"From: dave@example.org\r\nSubject: third\r\nMIME-Version: 1.0\r\n\r\n" + (b"x" * 70 + b"\r\n") * 80,
]


@pytest.fixture
def store_env() -> dict[str, str]:
    """The single Redis only (tests/store/test_import.py runs the import script on a Redis Cluster too)."""
    return {"POSTROOM_REDIS_URL": REDIS_URL, "POSTROOM_REDIS_CLUSTER": "false"}


@pytest.fixture
def dovecot_factory() -> Iterator[list[PrivateDovecot]]:
    started: list[PrivateDovecot] = []
    yield started
    for dovecot in started:
        dovecot.stop()


def new(started: list[PrivateDovecot], extra_config: str = "") -> PrivateDovecot:
    dovecot = PrivateDovecot([ALICE], extra_config)
    started.append(dovecot)
    return dovecot


async def _user(store: Store, address: str) -> None:
    if not await store.accounts.is_local_domain(DOMAIN):
        await store.accounts.add_domain(DOMAIN)
    await store.accounts.add_user(address, PASSWORD)


@pytest.mark.parametrize(
    "config",
    [
        "",  # Dovecot's defaults: pop3_uidl_format %08Xu%08Xv, no P fields in dovecot-uidlist
        # UIDLs of another format, saved as P fields at the first UIDL (a server migrated to Dovecot before).
        "pop3_uidl_format = %v.%u\npop3_save_uidl = yes\n",
    ],
    ids=["default-format", "saved-uidls"],
)
async def test_dovecot_maildir_imports_with_the_uidls_dovecot_served(
    dovecot_factory: list[PrivateDovecot], namespace: str, store: Store, store_env: dict[str, str], config: str
) -> None:
    dovecot = new(dovecot_factory, config).start()
    dovecot.deliver(ALICE, MESSAGES)
    served = dovecot.uidls_and_bodies(ALICE)
    assert len(served) == len(MESSAGES)
    uidlist = (dovecot.maildir(ALICE) / "dovecot-uidlist").read_text()
    assert (" P" in uidlist) == bool(config), uidlist
    await _user(store, ALICE)
    postroom = postroom_cli(namespace, store_env)

    result = postroom("import", "maildir", str(dovecot.maildir(ALICE)), "--user", ALICE, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) | {"skipped": []} == {
        "user": ALICE, "source": str(dovecot.maildir(ALICE)), "stored": 3, "duplicate": 0, "skipped": [],
    }  # fmt: skip
    async with postroom_pop3(namespace, store) as port:
        assert await postroom_messages(port, ALICE) == served

    # Again: nothing stored twice.
    again = postroom("import", "maildir", str(dovecot.maildir(ALICE)), "--user", ALICE)
    assert again.exit_code == 0, again.output
    assert again.stdout.startswith("imported 0 into alice@migrate.test, 3 already there, 0 broken, 0 over quota")
    user = await store.accounts.get_user(ALICE)
    assert user is not None and user.messages == 3


async def test_exported_maildir_is_served_by_dovecot_with_postroom_uidls(
    dovecot_factory: list[PrivateDovecot], namespace: str, store: Store, store_env: dict[str, str]
) -> None:
    source = new(dovecot_factory).start()
    source.deliver(ALICE, MESSAGES)
    await _user(store, ALICE)
    postroom = postroom_cli(namespace, store_env)
    assert postroom("import", "maildir", str(source.maildir(ALICE)), "--user", ALICE).exit_code == 0
    # One more message by Postroom's own delivery path: its UIDL is a queue id.
    from shared.queue_id import new_queue_id

    await store.mailboxes.deliver(ALICE, new_queue_id(), b"Subject: native\r\n\r\nDelivered here.\r\n")
    async with postroom_pop3(namespace, store) as port:
        postroom_view = await postroom_messages(port, ALICE)
    assert len(postroom_view) == 4

    # A Dovecot with a different pop3_uidl_format still serves Postroom's UIDLs: the P fields carry them.
    target = new(dovecot_factory, "pop3_uidl_format = %g\n")
    export_root = target.maildir(ALICE)
    result = postroom("export", ALICE, "--format", "maildir", str(export_root), "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["messages"] == 4

    target.start()
    assert target.uidls_and_bodies(ALICE) == postroom_view

    # And back into another Postroom mailbox: the same UIDLs again.
    bob = f"bob@{DOMAIN}"
    await _user(store, bob)
    assert postroom("import", "maildir", str(export_root), "--user", bob).exit_code == 0
    async with postroom_pop3(namespace, store) as port:
        assert await postroom_messages(port, bob) == postroom_view
