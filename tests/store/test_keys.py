"""The key schema: one Redis Cluster slot per mailbox whatever the address holds, and one mailbox per address."""

from __future__ import annotations

from hypothesis import example, given
from hypothesis import strategies as st
from redis.crc import key_slot

from services.store.keys import Keys, MailboxKeys, mailbox_tag, normalize_address

KEYS = Keys("postroom")
# atext (RFC 5322 §3.2.3) with the braces in it, and a few characters that are not atext but reach lookups anyway.
ATEXT = "abcXYZ019!#$%&'*+-/=?^_`{|}~"
LOCAL = st.text(alphabet=ATEXT + '."\\ :@', min_size=1, max_size=64)
ADDRESSES = st.one_of(
    st.builds(lambda local, domain: f"{local}@{domain}", LOCAL, st.sampled_from(["example.com", "EXAMPLE.test"])),
    st.emails(),
    st.text(max_size=80),
)


def all_keys(box: MailboxKeys, uid: str) -> list[str]:
    fixed = [box.account, box.index, box.sizes, box.wire, box.usage, box.seq, box.lock, box.imported]
    return [*fixed, box.message(uid), box.dedup(uid)]


@given(ADDRESSES, st.text(min_size=1, max_size=30))
@example("}ops@example.com", "01J00000000000000000000000")
@example("{a}b@example.com", "{x}")
@example("{}@example.com", "}")
@example("a}b{c@example.com", "")
def test_every_key_of_a_mailbox_hashes_to_one_slot(address: str, uid: str) -> None:
    slots = {key_slot(key.encode("utf-8", "surrogatepass")) for key in all_keys(KEYS.mailbox(address), uid)}
    assert len(slots) == 1, (address, slots)


@given(ADDRESSES, ADDRESSES)
@example("a@example.com", "a@example.com.")
@example("#" + "0" * 64, "}@example.com")
def test_different_mailboxes_never_share_keys(first: str, second: str) -> None:
    same = normalize_address(first) == normalize_address(second)
    assert (KEYS.mailbox(first).prefix == KEYS.mailbox(second).prefix) == same


def test_existing_mailboxes_keep_their_keys() -> None:
    """No migration: an address with an `@` and no brace is its own tag, as it always was."""
    assert KEYS.mailbox(" Alice@Example.COM ").account == "postroom:{alice@example.com}:account"
    assert KEYS.mailbox("o'neil+tag@example.com").message("Q1") == "postroom:{o'neil+tag@example.com}:msg:Q1"
    assert KEYS.mailbox("élodie@exemple.fr").lock == "postroom:{élodie@exemple.fr}:lock"


def test_a_brace_gets_a_digest_that_no_plain_address_can_take() -> None:
    tag = mailbox_tag("}ops@example.com")
    assert tag.startswith("#") and "{" not in tag and "}" not in tag and "@" not in tag
    assert mailbox_tag("}OPS@Example.com") == tag  # normalised first, like every other address
    assert mailbox_tag("{a}b@example.com") not in (tag, "{a}b@example.com")
    # The digest text itself, tried as an address (no `@`), is digested again: never the braced mailbox's keys.
    assert mailbox_tag(tag) != tag
    assert KEYS.mailbox(tag).prefix != KEYS.mailbox("}ops@example.com").prefix
