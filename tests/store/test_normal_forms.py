"""One account, whatever form of its address arrives: case, surrounding blanks and a trailing dot of the domain."""

from __future__ import annotations

import pytest

from services.store import Store
from services.store.accounts import ConflictError
from services.store.idn import ascii_address, normalize_domain

FORMS = ["carol@example.test", " Carol@Example.TEST ", "carol@example.test.", "CAROL@example.test.."]


async def test_every_form_of_an_address_is_the_same_account(store: Store) -> None:
    await store.accounts.add_domain("example.test")
    await store.accounts.add_user("carol@example.test", "pw")
    for form in FORMS:
        # A POP3 login checks the password, then locks the maildrop: both must be the same mailbox's.
        assert await store.accounts.authenticate(form, "pw"), form
        token = await store.mailboxes.acquire_lock(form, 30)
        assert token is not None, form
        assert await store.mailboxes.release_lock("carol@example.test", token)
        facts = await store.accounts.lookup(form)  # RCPT time and routing
        assert facts.local_domain and facts.user, form


async def test_every_form_of_an_alias_is_the_same_alias(store: Store) -> None:
    await store.accounts.add_domain("example.test")
    await store.accounts.add_alias("Sales@Example.Test.", ["carol@example.test"])
    for form in FORMS:
        sales = form.replace("carol", "sales").replace("CAROL", "SALES").replace("Carol", "Sales")
        assert await store.accounts.alias_targets(sales) == ["carol@example.test"], sales
        assert (await store.accounts.lookup(sales)).aliases == ["carol@example.test"], sales
    assert list(await store.accounts.list_aliases()) == ["sales@example.test"]
    assert await store.accounts.remove_alias("SALES@example.test.")


# RFC 5890: a domain's U-label and A-label forms are one domain (UTS #46 maps the case of a U-label too).
IDN_FORMS = ["info@bücher.test", "info@xn--bcher-kva.test", "Info@BÜCHER.test", "info@XN--BCHER-KVA.TEST."]


async def test_u_label_and_a_label_forms_are_one_mailbox(store: Store) -> None:
    await store.accounts.add_domain("xn--bcher-kva.test")
    assert await store.accounts.list_domains() == ["bücher.test"]
    await store.accounts.add_user("info@xn--bcher-kva.test", "pw")
    assert await store.accounts.list_users() == ["info@bücher.test"]
    for form in IDN_FORMS:
        assert await store.accounts.is_local_domain(form.rpartition("@")[2]), form
        assert await store.accounts.authenticate(form, "pw"), form
        token = await store.mailboxes.acquire_lock(form, 30)
        assert token is not None, form
        assert await store.mailboxes.release_lock("info@bücher.test", token)
        facts = await store.accounts.lookup(form)
        assert facts.local_domain and facts.user, form


async def test_aliases_of_an_idn_domain_answer_to_both_forms(store: Store) -> None:
    await store.accounts.add_domain("bücher.test")
    await store.accounts.add_alias("verkauf@xn--bcher-kva.test", ["info@BÜCHER.test"])
    await store.accounts.add_alias("@bücher.test", ["info@bücher.test"])
    assert await store.accounts.alias_targets("verkauf@bücher.test") == ["info@bücher.test"]
    facts = await store.accounts.lookup("anyone@xn--bcher-kva.test")
    assert facts.local_domain and facts.catch_all == ["info@bücher.test"]
    await store.accounts.add_user("info@bücher.test", "pw")
    with pytest.raises(ConflictError):
        await store.accounts.add_user("info@xn--bcher-kva.test", "pw")


def test_domain_forms() -> None:
    assert normalize_domain("XN--BCHER-KVA.test.") == normalize_domain("Bücher.Test") == "bücher.test"
    assert normalize_domain("example.test") == "example.test"
    assert normalize_domain("xn--zz.test") == "xn--zz.test"  # not an IDN: kept as written, matches nothing local
    assert ascii_address("info@bücher.test") == "info@xn--bcher-kva.test"
    assert ascii_address("info@example.test") == "info@example.test"
    assert ascii_address("jörg@bücher.test") is None
