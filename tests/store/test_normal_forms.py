"""One account, whatever form of its address arrives: case, surrounding blanks and a trailing dot of the domain."""

from __future__ import annotations

from services.store import Store

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
