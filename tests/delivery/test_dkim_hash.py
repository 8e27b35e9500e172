"""The streamed DKIM body hash and signature field against dkimpy's own, and the signer's choices (unit tests)."""

from __future__ import annotations

import base64
import hashlib
import time
from typing import Any

import dkim
import pytest
from dkim.canonicalization import Relaxed
from hypothesis import given, settings
from hypothesis import strategies as st

from services.delivery import metrics
from services.delivery.dkim import (
    KeyCache,
    Signer,
    candidate_domains,
    from_domain,
    header_section,
    relaxed_body_hash,
    signature_header,
    signing_keys,
)
from services.store.dkim import DkimKey, new_key_pair
from shared.dotstuff import LineEnds
from shared.envelope import Envelope

_PIECES = st.sampled_from([b"a", b"xyz", b" ", b"\t", b"  \t ", b"\r\n", b"\r\n\r\n", b"\n", b"\r", b".", b"\xc3\xa9"])


def dkimpy_body_hash(body: bytes) -> bytes:
    """What a receiver computes over the body as it arrives (CRLF line ends, a final CRLF)."""
    ends = LineEnds()
    wire = ends.feed(body) + ends.finish()
    if wire and not wire.endswith(b"\r\n"):
        wire += b"\r\n"
    return base64.b64encode(hashlib.sha256(Relaxed.canonicalize_body(wire)).digest())


@settings(max_examples=400, deadline=None)
@given(st.lists(_PIECES, max_size=60), st.integers(min_value=1, max_value=9))
def test_streamed_body_hash_is_dkimpys(pieces: list[bytes], chunk: int) -> None:
    body = b"".join(pieces)
    assert relaxed_body_hash(memoryview(body), chunk) == dkimpy_body_hash(body)


def test_body_hash_edge_cases() -> None:
    for body in (
        b"",
        b"\r\n",
        b"\r\n\r\n",
        b"abc",
        b"abc  ",
        b"a\r\n\r\n\r\n",
        b"x" * 300 + b"  \r\n  \r\n",
        b" \t\r\n",
    ):
        for chunk in (1, 2, 7, 64 * 1024):
            assert relaxed_body_hash(memoryview(body), chunk) == dkimpy_body_hash(body), (body, chunk)


@pytest.fixture(scope="module")
def keys() -> dict[str, DkimKey]:
    made = {}
    for algorithm in ("rsa", "ed25519"):
        public, private = new_key_pair(algorithm)
        made[algorithm] = DkimKey("example.test", f"s-{algorithm}", algorithm, 1.0, public, private)
    return made


MESSAGE = (
    b"Received: from client by mx\r\nFrom: Alice <alice@example.test>\r\nTo: bob@remote.test\r\n"
    b"Subject:  several   spaces\r\n\tfolded\r\nDate: Wed, 2 Dec 2026 13:00:00 +0000\r\n"
    b"Message-ID: <1@example.test>\r\n"
    b"X-Other: not signed\r\n\r\nHello  there \r\n\r\n.dot line\r\n\r\n\r\n"
)


@pytest.mark.parametrize("algorithm", ["rsa", "ed25519"])
def test_signature_field_is_what_dkimpy_sign_makes(
    keys: dict[str, DkimKey], algorithm: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The seam: our field equals dkimpy's `sign` for the same message, headers and time (a fork that moved fails)."""
    key = keys[algorithm]
    headers, start = header_section(MESSAGE)
    ours = signature_header(headers, key, relaxed_body_hash(memoryview(MESSAGE)[start:]), 1_700_000_000)
    assert b"h=from:to:subject:date:message-id:from;" in b"".join(ours.split())
    monkeypatch.setattr(time, "time", lambda: 1_700_000_000.5)
    theirs = dkim.sign(
        MESSAGE,
        key.selector.encode(),
        b"example.test",
        key.private_key.encode(),
        canonicalize=(b"relaxed", b"relaxed"),
        signature_algorithm=b"rsa-sha256" if algorithm == "rsa" else b"ed25519-sha256",
        include_headers=[b"from", b"to", b"subject", b"date", b"message-id", b"from"],
    )
    assert ours == theirs


def test_from_domain_and_candidates() -> None:
    assert from_domain(b"From: Alice <Alice@Example.TEST.>\r\n") == "example.test"
    assert from_domain(b"From: a@x.test, b@y.test\r\n") is None
    assert from_domain(b"From: a@x.test\r\nFrom: b@x.test\r\n") is None
    assert from_domain(b"To: a@x.test\r\n") is None
    assert from_domain(b"From: undisclosed\r\n") is None
    assert candidate_domains("mx.a.example.test") == ["mx.a.example.test", "a.example.test", "example.test"]
    assert candidate_domains("example.test") == ["example.test"]
    assert candidate_domains("localhost") == ["localhost"]


def test_oldest_key_of_each_algorithm_signs() -> None:
    def key(selector: str, algorithm: Any, created: float) -> DkimKey:
        return DkimKey("d.test", selector, algorithm, created, "p", "k")

    keys = [key("e1", "ed25519", 1), key("r1", "rsa", 2), key("r2", "rsa", 3), key("e2", "ed25519", 4)]
    assert [k.selector for k in signing_keys(keys)] == ["r1", "e1"]


class FakeStore:
    """Keys per domain; `down` makes every read fail as an unreachable Redis would."""

    def __init__(self, keys: dict[str, list[DkimKey]]) -> None:
        self.keys = keys
        self.reads = 0
        self.down = False

    async def keys_of(self, domain: str) -> list[DkimKey]:
        self.reads += 1
        if self.down:
            raise ConnectionError("redis down")
        return self.keys.get(domain, [])


async def test_key_cache_ttl_and_stale_keys_on_failure(keys: dict[str, DkimKey]) -> None:
    now = [0.0]
    store = FakeStore({"example.test": [keys["rsa"]]})
    cache = KeyCache(store, ttl=60, clock=lambda: now[0])  # type: ignore[arg-type]
    assert await cache.keys("example.test") == [keys["rsa"]]
    assert await cache.keys("example.test") == [keys["rsa"]] and store.reads == 1
    now[0] = 61
    store.down = True
    assert await cache.keys("example.test") == [keys["rsa"]] and store.reads == 2  # stale, but signing goes on
    with pytest.raises(ConnectionError):
        await cache.keys("other.test")


def counts() -> tuple[float, float, float]:
    return tuple(metrics.DKIM_SIGNATURES.labels(r)._value.get() for r in ("signed", "failed", "skipped"))


async def test_signer_decides_and_never_raises(keys: dict[str, DkimKey]) -> None:
    store = FakeStore({"example.test": [keys["rsa"], keys["ed25519"]]})
    signer = Signer(KeyCache(store), trusted_networks=())  # type: ignore[arg-type]
    before = counts()
    ours = Envelope("Q", "alice@example.test", ("b@remote.test",), auth_user="alice@example.test")
    fields = await signer.sign(ours, MESSAGE)
    assert fields.count(b"DKIM-Signature:") == 2 and b"a=rsa-sha256" in fields and b"a=ed25519-sha256" in fields
    verifier = dkim.DKIM(fields + MESSAGE)
    records = {f"{k.selector}._domainkey.example.test.".encode(): k.record.encode() for k in keys.values()}
    for index in (0, 1):  # with the records as DNS would serve them
        assert verifier.verify(idx=index, dnsfunc=lambda name, timeout=5: records.get(name))
    stranger = Envelope("Q", "x@example.test", ("b@remote.test",), client_address="192.0.2.1")
    assert await signer.sign(stranger, MESSAGE) == b""  # From us, but from the internet: not ours to vouch for
    foreign = MESSAGE.replace(b"alice@example.test", b"alice@elsewhere.test")
    assert await signer.sign(ours, foreign) == b""
    store.keys["example.test"] = [DkimKey("example.test", "bad", "rsa", 1, "p", "not a key")]
    signer.cache = KeyCache(store)  # type: ignore[arg-type]
    assert await signer.sign(ours, MESSAGE) == b""
    after = counts()
    assert (after[0] - before[0], after[1] - before[1], after[2] - before[2]) == (1, 1, 2)
    assert await Signer(KeyCache(store), (), enabled=False).sign(ours, MESSAGE) == b""  # type: ignore[arg-type]
