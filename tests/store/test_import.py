"""`postroom import` and `postroom export` against the real Redis (and a Redis Cluster): UIDLs from a
dovecot-uidlist, broken files reported and skipped, quotas, no message stored twice, mbox in and out."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from services.store import Store
from services.store.migrate.maildir import MaildirError, expand_uidl, read_maildir
from services.store.migrate.mbox import read_mbox
from tests.store.migration import DOMAIN, PASSWORD, Postroom, postroom_cli, postroom_messages, postroom_pop3

USER = f"ann@{DOMAIN}"


def message(subject: str, body: str = "Hello.\n") -> bytes:
    return f"From: bob@example.org\nSubject: {subject}\n\n{body}".encode()


def maildir(root: Path, files: dict[str, bytes], uidlist: str | None = None) -> Path:
    for sub in ("cur", "new", "tmp"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (root / name).write_bytes(data)
    if uidlist is not None:
        (root / "dovecot-uidlist").write_text(uidlist)
    return root


@pytest.fixture
def postroom(namespace: str, store_env: dict[str, str]) -> Postroom:
    return postroom_cli(namespace, store_env)


@pytest.fixture
async def user(store: Store) -> str:
    await store.accounts.add_domain(DOMAIN)
    await store.accounts.add_user(USER, PASSWORD)
    return USER


def test_uidl_format_is_expanded_as_dovecot_does() -> None:
    # Values read off Dovecot 2.3 (tests/store/test_dovecot_migration.py compares with a running one).
    assert expand_uidl("%08Xu%08Xv", 1, 0x6B1019DF, "base", "guid") == "000000016b1019df"
    assert expand_uidl("%v.%u", 7, 1275660208, "base", "guid") == "1275660208.7"
    assert expand_uidl("%f|%g|%Uf|100%%", 7, 1, "name.host", "abc") == "name.host|abc|NAME.HOST|100%"
    with pytest.raises(MaildirError, match="only %u"):
        list(read_maildir(Path("/nonexistent"), "%m"))


def test_uidlist_fields_order_and_uidls(tmp_path: Path) -> None:
    body = message("one")
    crlf_size = len(body) + body.count(b"\n")
    root = maildir(
        tmp_path / "box",
        {
            f"cur/100.M1P1.host,S={len(body)}:2,S": body,
            "cur/101.M1P1.host:2,": message("two"),
            "new/102.M1P1.host": message("three"),
            "new/103.M1P1.host": message("not listed yet"),
        },
        f"3 V1275660208 N105 G3085f01b7f11094c501100008c4a11c1\n"
        f"1 W{crlf_size} :100.M1P1.host,S={len(body)}\n"
        "2 P :101.M1P1.host\n"
        "3 O1 Pold-server-uidl G0123 :102.M1P1.host\n"
        "4 :gone.M1P1.host\n",
    )
    found = list(read_maildir(root))
    # O (POP3 order) first, then by UID; files Dovecot never listed last, without a UIDL of their own.
    assert [(c.origin, c.uidl, c.problem) for c in found] == [
        ("new/102.M1P1.host", "old-server-uidl", None),
        (f"cur/100.M1P1.host,S={len(body)}:2,S", "00000001" + f"{1275660208:08x}", None),
        ("cur/101.M1P1.host:2,", "101.M1P1.host", None),  # P without a value: the base file name
        ("new/103.M1P1.host", None, None),
    ]


async def test_broken_files_are_reported_and_skipped_the_rest_stored(
    postroom: Postroom, store: Store, user: str, tmp_path: Path
) -> None:
    good = message("good", "a line\n.\n")
    root = maildir(
        tmp_path / "box",
        {
            "cur/1.M1.host:2,S": good,
            "cur/2.M1.host:2,S": b"",
            "cur/3.M1.host:2,S": b"\x1f\x8b\x08\x00compressed\x00",
            "cur/4.M1.host,S=9999:2,S": message("cut short"),
            "cur/5.M1.host:2,S": b"this is not a message\n",
            "cur/6.M1.host:2,S": message("bad uidl"),
        },
        "3 V1 N7 Gx\n1 :1.M1.host\n2 :2.M1.host\n3 :3.M1.host\n4 :4.M1.host,S=9999\n5 :5.M1.host\n6 P" + "x" * 71
        + " :6.M1.host\n",
    )  # fmt: skip
    result = postroom("import", "maildir", str(root), "--user", user, "--json")
    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)
    assert report["stored"] == 1 and report["duplicate"] == 0
    reasons = {s["origin"]: s["reason"] for s in report["skipped"]}
    assert reasons == {
        "cur/2.M1.host:2,S": "empty",
        "cur/3.M1.host:2,S": "holds NUL bytes (binary or compressed data, not a message)",
        "cur/4.M1.host,S=9999:2,S": f"is {len(message('cut short'))} bytes, its maildir name says S=9999 "
        "(truncated copy?)",
        "cur/5.M1.host:2,S": "does not start with a header field",
        "cur/6.M1.host:2,S": f"its UIDL {'x' * 71!r} is not 1-70 printable characters (RFC 1939)",
    }
    assert sorted(result.stderr.splitlines()) == sorted(f"postroom: skipped {o}: {r}" for o, r in reasons.items())
    # Only the good message is in the mailbox, counted once; nothing of the broken ones.
    infos = await store.mailboxes.snapshot(user)
    assert [i.uid for i in infos] == ["00000001" + "00000001"]
    assert await store.mailboxes.read(user, infos[0].uid) == good.replace(b"\n", b"\r\n")
    account = await store.accounts.get_user(user)
    assert account is not None and (account.messages, account.bytes) == (1, infos[0].size)


async def test_quota_holds_and_a_rerun_stores_nothing_twice_even_after_pop3_deleted(
    postroom: Postroom, store: Store, user: str, tmp_path: Path
) -> None:
    bodies = [message(f"m{i}", "x" * 400 + "\n") for i in range(4)]
    size = len(bodies[0]) + bodies[0].count(b"\n")
    await store.accounts.set_quota(user, 3 * size)
    root = maildir(tmp_path / "box", {f"cur/{i}.M1.host:2,": b for i, b in enumerate(bodies)})

    first = postroom("import", "maildir", str(root), "--user", user)
    assert first.exit_code == 1
    assert first.stdout.strip() == f"imported 3 into {user}, 0 already there, 0 broken, 1 over quota (from {root})"
    assert first.stderr.strip() == "postroom: skipped cur/3.M1.host:2,: over quota"

    # A POP3 client downloads and deletes the first message.
    async with postroom_pop3(store.namespace, store) as port:
        import poplib

        def fetch_and_delete() -> None:
            client = poplib.POP3("127.0.0.1", port, timeout=20)
            client.user(user)
            client.pass_(PASSWORD)
            client.dele(1)
            client.quit()

        import asyncio

        await asyncio.to_thread(fetch_and_delete)
        left = await postroom_messages(port, user)
    assert len(left) == 2

    # The import runs again: the deleted message does not come back, the one over quota now fits.
    again = postroom("import", "maildir", str(root), "--user", user, "--json")
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout) | {"source": ""} == {
        "user": user, "source": "", "stored": 1, "duplicate": 3, "skipped": [],
    }  # fmt: skip
    account = await store.accounts.get_user(user)
    assert account is not None and (account.messages, account.bytes) == (3, 3 * size)

    # A removed user takes its import record along: the same address may import the same mail again.
    await store.accounts.remove_user(user)
    await store.accounts.add_user(user, PASSWORD)
    assert postroom("import", "maildir", str(root), "--user", user).exit_code == 0
    account = await store.accounts.get_user(user)
    assert account is not None and account.messages == 4


MBOX = (
    b"From alice@example.org Mon Jan  1 00:00:00 2024\n"
    + message("first", ">From the top\n>>From quoted once\n>>>From quoted twice\n\n")
    + b"\nFrom MAILER-DAEMON Tue Jan  2 00:00:00 2024\n"
    + b"\x00binary junk\n"
    + b"\nFrom bob@example.org Wed Jan  3 00:00:00 2024\n"
    + message("third")
)


async def test_mbox_import_unquotes_and_skips_a_broken_message(
    postroom: Postroom, store: Store, user: str, tmp_path: Path
) -> None:
    path = tmp_path / "in.mbox"
    path.write_bytes(MBOX)
    result = postroom("import", "mbox", str(path), "--user", user)
    assert result.exit_code == 1, result.output
    assert result.stderr.strip() == (
        "postroom: skipped in.mbox message 2: holds NUL bytes (binary or compressed data, not a message)"
    )
    bodies = [await store.mailboxes.read(user, i.uid) for i in await store.mailboxes.snapshot(user)]
    assert bodies == [
        # mboxrd: one `>` fewer on each quoted From line, and the empty line kept (only the separator's goes).
        message("first", "From the top\n>From quoted once\n>>From quoted twice\n\n").replace(b"\n", b"\r\n"),
        message("third").replace(b"\n", b"\r\n"),
    ]  # fmt: skip
    assert postroom("import", "mbox", str(path), "--user", user).stdout.startswith("imported 0 into")


async def test_mbox_export_then_import_round_trip(postroom: Postroom, store: Store, user: str, tmp_path: Path) -> None:
    from shared.queue_id import new_queue_id

    originals = [
        b"Return-Path: <x@example.org>\r\nSubject: a\r\n\r\nFrom here\r\n>From there\r\n.\r\n",
        b"Subject: b\r\nDate: Thu, 01 Feb 2024 10:00:00 +0000\r\n\r\nno final newline",
        b"Subject: c\r\n\r\n\r\n\r\nblank lines above and below\r\n\r\n",
    ]
    for data in originals:
        await store.mailboxes.deliver(user, new_queue_id(), data)
    path = tmp_path / "out.mbox"
    result = postroom("export", user, "--format", "mbox", str(path), "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {
        "user": user, "destination": str(path), "format": "mbox", "messages": 3, "bytes": sum(map(len, originals)),
    }  # fmt: skip
    text = path.read_bytes()
    assert text.startswith(b"From x@example.org ") and b"\n>From here\n>>From there\n" in text
    assert b"From MAILER-DAEMON Thu Feb  1 10:00:00 2024\n" in text
    # Never over an existing file.
    assert "exists" in postroom("export", user, "--format", "mbox", str(path)).stderr

    other = f"other@{DOMAIN}"
    await store.accounts.add_user(other, PASSWORD)
    assert postroom("import", "mbox", str(path), "--user", other).exit_code == 0
    back = [await store.mailboxes.read(other, i.uid) for i in await store.mailboxes.snapshot(other)]
    # Byte for byte, but the message without a final line end gets one (an mbox line always ends).
    assert back == [originals[0], originals[1] + b"\r\n", originals[2]]


async def test_usage_errors_are_one_line(postroom: Postroom, user: str, tmp_path: Path) -> None:
    (tmp_path / "plain.txt").write_text("hello\n")
    cases = [
        (("import", "mbox", str(tmp_path / "plain.txt"), "--user", user), "is not an mbox file"),
        (("import", "mbox", str(tmp_path / "missing"), "--user", user), "cannot be read"),
        (("import", "maildir", str(tmp_path), "--user", user), "is not a maildir"),
        (("import", "maildir", str(maildir(tmp_path / "box", {})), "--user", "nobody@" + DOMAIN), "no such user"),
        (("export", "nobody@" + DOMAIN, "--format", "mbox", str(tmp_path / "x")), "no such user"),
        (("export", user, "--format", "maildir", str(tmp_path)), "exists and is not an empty directory"),
    ]
    for args, text in cases:
        result = postroom(*args)
        assert result.exit_code == 1, (args, result.output)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("postroom: error: ") and text in lines[0], (args, lines)
    assert postroom("export", user, "--format", "zip", str(tmp_path / "y")).exit_code == 2
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_mbox_reader_streams(tmp_path: Path) -> None:
    path = tmp_path / "big.mbox"
    with path.open("wb") as out:
        for i in range(3):
            out.write(b"From a@b Mon Jan  1 00:00:00 2024\n" + message(f"n{i}") + b"\n")
    reader = read_mbox(path)
    assert next(reader).data == message("n0")  # the first message comes before the file is read through
    assert [c.data for c in reader] == [message("n1"), message("n2")]
