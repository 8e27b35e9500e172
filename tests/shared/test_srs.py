"""SRS addresses: what goes out reverses to the sender, also lower-cased; forged or foreign ones do not."""

from __future__ import annotations

from pydantic import SecretStr

from shared.srs import Srs, SrsSettings


def test_forward_reverses_to_the_sender_also_lower_cased() -> None:
    srs = Srs(SecretStr("secret"))
    address = srs.forward("Someone@Origin.test", "example.test")
    assert address.startswith("SRS0=") and address.endswith("@example.test")
    assert srs.reverse(address) == "Someone@Origin.test"
    assert srs.reverse(address.lower()) == "someone@origin.test"


def test_forged_or_plain_addresses_do_not_reverse() -> None:
    srs = Srs(SecretStr("secret"))
    assert srs.reverse(Srs(SecretStr("other")).forward("a@origin.test", "example.test")) is None
    assert srs.reverse("alice@example.test") is None
    assert srs.reverse("SRS0=broken@example.test") is None
    assert srs.forward("not an address", "example.test") == "not an address"


def test_unset_or_empty_secret_is_off() -> None:
    assert Srs.of(SrsSettings()) is None
    assert Srs.of(SrsSettings(srs_secret=SecretStr(""))) is None
    assert Srs.of(SrsSettings(srs_secret=SecretStr("x"))) is not None
