"""Properties of the envelope address policy: any text gets a decision, never an exception; valid paths pass."""

from __future__ import annotations

from hypothesis import example, given, settings
from hypothesis import strategies as st

from services.smtp_ingress import replies
from services.smtp_ingress.policy import (
    MAX_DOMAIN,
    MAX_LOCAL_PART,
    MAX_PATH,
    check_address,
    split_domain,
    valid_domain,
    valid_helo,
)

ADDRESS_REPLIES = {
    replies.CONTROL_CHARACTERS,
    replies.BAD_SENDER_SYNTAX,
    replies.BAD_RECIPIENT_SYNTAX,
    replies.ADDRESS_TOO_LONG,
    replies.QUOTED_LOCAL_PART,
    replies.NON_ASCII_WITHOUT_SMTPUTF8,
}
ATEXT = "abcXYZ0189!#$%&'*+/=?^_`{|}~-"
atom = st.text(ATEXT, min_size=1, max_size=10)
local_part = st.lists(atom, min_size=1, max_size=4).map(".".join)
label = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True)
domain = st.lists(label, min_size=1, max_size=4).map(".".join)
# Anything a client may put between the angle brackets, surrogate escapes (undecodable bytes) included.
any_address = st.one_of(
    st.text(max_size=80),
    st.text(ATEXT + '@."[]\\ :üß\x00\x7f\udc80', max_size=80),
    st.builds("{}@{}".format, st.text(max_size=70), st.text(max_size=270)),
)


@settings(max_examples=500, deadline=None)
@given(address=any_address, sender=st.booleans(), smtputf8=st.booleans())
@example("a@" + "b" * 300, False, True)
@example('"x@y"@example.org', False, True)
@example("a@[IPv6:::1]", True, False)
@example("a@[300.1.1.1]", True, False)
@example("a@xn--zz.example", True, False)
@example("a@ü" * 3, True, True)
def test_any_address_gets_a_decision(address: str, sender: bool, smtputf8: bool) -> None:
    decision = check_address(address, sender=sender, smtputf8=smtputf8)
    assert decision is None or decision in ADDRESS_REPLIES
    if decision is None and address != "<>":
        # What passed is something the rest of the path can use: a domain to route on, lengths within RFC 5321.
        assert split_domain(address) and "@" not in split_domain(address)
        assert len(address.encode()) + 2 <= MAX_PATH
        assert address.isascii() or smtputf8


@settings(max_examples=300, deadline=None)
@given(local=local_part, domain=domain, sender=st.booleans())
def test_dot_atom_at_a_host_name_passes_within_the_limits(local: str, domain: str, sender: bool) -> None:
    address = f"{local}@{domain}"
    decision = check_address(address, sender=sender, smtputf8=False)
    too_long = len(local) > MAX_LOCAL_PART or len(domain) > MAX_DOMAIN or len(address) + 2 > MAX_PATH
    assert decision == (replies.ADDRESS_TOO_LONG if too_long else None)
    assert split_domain(address) == domain.lower()


@settings(max_examples=300, deadline=None)
@given(local=local_part, domain=domain, sender=st.booleans())
def test_a_control_character_anywhere_is_refused(local: str, domain: str, sender: bool) -> None:
    for bad in ("\x00", "\r", "\n", "\x7f", "\udcff"):
        for address in (f"{bad}{local}@{domain}", f"{local}@{domain}{bad}", f"{local}{bad}@{domain}"):
            assert check_address(address, sender=sender, smtputf8=True) == replies.CONTROL_CHARACTERS


@settings(max_examples=300, deadline=None)
@given(name=st.one_of(st.text(max_size=300), domain, st.text("0123456789.:abcdefIPv6", max_size=45).map("[{}]".format)))
def test_domain_and_helo_checks_never_raise(name: str) -> None:
    assert isinstance(valid_domain(name), bool)
    assert isinstance(valid_helo(name), bool)
