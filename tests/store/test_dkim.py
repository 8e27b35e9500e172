"""DKIM keys in the store, through the `postroom dkim` commands and the admin API, against the real Redis."""

from __future__ import annotations

import base64
import json

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from services.store import Store
from services.store.accounts import ConflictError, NotFoundError
from services.store.dkim import DkimKey
from tests.store.conftest import AdminAPI
from tests.store.test_api import assert_error, call
from tests.store.test_cli import one_line_error, postroom  # noqa: F401  (the fixture)


def _txt_strings(line: str) -> str:
    """The text of a zone-file TXT line, its quoted strings joined."""
    return "".join(part for i, part in enumerate(line.split('"')) if i % 2)


async def test_rsa_and_ed25519_keys_are_real_key_pairs(store: Store) -> None:
    await store.accounts.add_domain("example.test")
    rsa_key = await store.dkim.generate("Example.TEST", "s1", "rsa")
    ed_key = await store.dkim.generate("example.test", None, "ed25519")
    assert ed_key.selector.startswith("ed25519-")
    private = serialization.load_pem_private_key(rsa_key.private_key.encode(), None)
    assert isinstance(private, rsa.RSAPrivateKey) and private.key_size == 2048
    assert "BEGIN RSA PRIVATE KEY" in rsa_key.private_key  # PKCS#1, as dkimpy parses it
    public = serialization.load_der_public_key(base64.b64decode(rsa_key.public_key))
    assert isinstance(public, rsa.RSAPublicKey) and public.public_numbers() == private.public_key().public_numbers()
    seed = ed25519.Ed25519PrivateKey.from_private_bytes(base64.b64decode(ed_key.private_key))
    raw = seed.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert base64.b64decode(ed_key.public_key) == raw
    assert ed_key.record == f"v=DKIM1; k=ed25519; p={ed_key.public_key}"
    assert rsa_key.dns_name == "s1._domainkey.example.test"
    assert _txt_strings(rsa_key.zone_line) == rsa_key.record
    assert all(len(s) <= 255 for s in rsa_key.zone_line.split('"')[1::2])
    assert [k.selector for k in await store.dkim.show("example.test")] == ["s1", ed_key.selector]


async def test_key_errors(store: Store) -> None:
    with pytest.raises(NotFoundError):
        await store.dkim.generate("nowhere.test")
    await store.accounts.add_domain("example.test")
    await store.dkim.generate("example.test", "s1")
    with pytest.raises(ConflictError):
        await store.dkim.generate("example.test", "S1", "ed25519")
    for bad in ("-s", "a..b", "a_b", "x" * 64, "s1;p=x"):
        with pytest.raises(ValueError, match="bad selector"):
            await store.dkim.generate("example.test", bad)
    assert await store.dkim.remove("example.test", "S1")
    assert not await store.dkim.remove("example.test", "s1")


async def test_removing_the_domain_removes_its_keys(store: Store) -> None:
    await store.accounts.add_domain("example.test")
    await store.dkim.generate("example.test", "s1")
    await store.accounts.remove_domain("example.test")
    await store.accounts.add_domain("example.test")
    assert await store.dkim.show("example.test") == []


async def test_cli_generate_show_remove(postroom, store: Store) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    postroom("domain", "add", "example.test")
    made = postroom("dkim", "generate", "example.test", "--selector", "mail")
    assert made.exit_code == 0, made.output
    [key] = await store.dkim.show("example.test")
    assert key.zone_line in made.stdout and _txt_strings(made.stdout) == key.record
    made = postroom("dkim", "generate", "example.test", "--algorithm", "ed25519", "--json")
    assert made.exit_code == 0 and json.loads(made.stdout)["algorithm"] == "ed25519"
    shown = postroom("dkim", "show", "example.test")
    keys: list[DkimKey] = await store.dkim.show("example.test")
    assert shown.exit_code == 0 and all(k.zone_line in shown.stdout for k in keys)
    listed = json.loads(postroom("dkim", "show", "example.test", "--json").stdout)
    assert [k["selector"] for k in listed] == [k.selector for k in keys]
    for output in (shown.stdout, json.dumps(listed), made.stdout):
        assert not any(k.private_key[40:80] in output for k in keys) and "PRIVATE" not in output
    assert "exists" in one_line_error(postroom("dkim", "generate", "example.test", "--selector", "mail"))
    assert "no such domain" in one_line_error(postroom("dkim", "show", "nowhere.test"))
    assert one_line_error(postroom("dkim", "generate", "example.test", "--algorithm", "dsa"), 2)
    assert postroom("dkim", "remove", "example.test", "mail").exit_code == 0
    assert "no DKIM key" in one_line_error(postroom("dkim", "remove", "example.test", "mail"))
    assert [k.algorithm for k in await store.dkim.show("example.test")] == ["ed25519"]


def test_api_generate_list_remove(admin: AdminAPI) -> None:
    path = "/api/v1/domains/example.test/dkim"
    assert_error(call(admin, "GET", path), 404)
    call(admin, "POST", "/api/v1/domains", json={"domain": "example.test"})
    assert call(admin, "GET", path).json() == {"domain": "example.test", "keys": []}
    made = call(admin, "POST", path, json={"selector": "s1"})
    assert made.status_code == 201, made.text
    key = made.json()
    assert key["algorithm"] == "rsa" and key["name"] == "s1._domainkey.example.test"
    assert set(key) == {"domain", "selector", "algorithm", "created", "name", "record"}
    ed = call(admin, "POST", path, json={"algorithm": "ed25519"})
    assert ed.status_code == 201 and ed.json()["record"].startswith("v=DKIM1; k=ed25519; p=")
    assert_error(call(admin, "POST", path, json={"selector": "s1"}), 409)
    assert_error(call(admin, "POST", path, json={"selector": "bad selector"}), 400)
    assert_error(call(admin, "POST", path, json={"algorithm": "dsa"}), 400)
    listed = call(admin, "GET", path).json()["keys"]
    assert [k["selector"] for k in listed] == ["s1", ed.json()["selector"]]
    assert "private" not in json.dumps(listed).lower()
    assert call(admin, "DELETE", path + "/s1").status_code == 204
    assert_error(call(admin, "DELETE", path + "/s1"), 404)
