"""On the wire with raw sockets: octet counts, dot-stuffing of what is stored, streaming, TOP, pipelining."""

from __future__ import annotations

import asyncio

import pytest

from services.pop3 import replies
from services.pop3.server import Pop3Server
from services.store import Store
from tests.helpers import wait_until
from tests.pop3.conftest import PASSWORD, USER, Client, StartServer, deliver, message


def unstuff(body: bytes) -> bytes:
    lines = body.split(b"\r\n")
    return b"\r\n".join(line[1:] if line.startswith(b".") else line for line in lines)


async def test_octet_counts_match_what_retr_sends(pop3: Pop3Server, account: str, store: Store) -> None:
    tricky = [
        message("dots", ".\r\n..\r\n.a\r\n"),
        b"Subject: lf only\n\nline\n.\nend\n",  # normalised to CRLF by the store before counting
        message("no final newline", "last line"),
        message("ends with dot line", "x\r\n."),
    ]
    await deliver(store, *tricky)
    client = await Client.connect(pop3.ports["pop3"])
    await client.login()
    _, listing = await client.multiline("LIST")
    sizes = [int(line.split()[1]) for line in listing]
    stat = await client.cmd("STAT")
    assert stat == f"+OK {len(tricky)} {sum(sizes)}"
    for n, size in enumerate(sizes, 1):
        assert await client.cmd(f"RETR {n}") == "+OK " + replies.ok_retr(size).text
        body = await client.raw_multiline()
        assert b"\n" not in body.replace(b"\r\n", b"") and b"\r" not in body.replace(b"\r\n", b"")
        sent = unstuff(body)
        # The count is of the unstuffed CRLF text; a message lacking a final CRLF gets one added (not counted).
        assert len(sent) in (size, size + 2)
    await client.close()


async def test_whatever_is_stored_goes_out_as_crlf_and_stuffed(pop3: Pop3Server, account: str, store: Store) -> None:
    # Bypass the store's normalisation, as an older writer or a restore from backup might.
    (uid,) = await deliver(store, message("placeholder"))
    raw = b"Subject: raw\n\n.hidden\r.\rend"
    box = store.keys.mailbox(USER)
    await store.redis.set(box.message(uid), raw)
    await store.redis.hset(box.sizes, uid, len(raw))
    await store.redis.srem(box.wire, uid)  # the wire-form flag is the store's: a body written outside has none
    client = await Client.connect(pop3.ports["pop3"])
    await client.login()
    assert (await client.cmd("RETR 1")).startswith("+OK")
    body = await client.raw_multiline()
    assert body == b"Subject: raw\r\n\r\n..hidden\r\n..\r\nend\r\n"
    await client.close()


async def test_mail_stored_before_the_wire_flag_goes_out_the_same(
    start_pop3: StartServer, account: str, store: Store
) -> None:
    """RETR sends a body flagged as wire form as stored; without the flag (mail stored before the flag existed, the
    store's old format) the same mailbox goes out byte for byte the same, through line-end checks and dot-stuffing."""
    server = await start_pop3(pop3_chunk_size=1024)
    big = message("big clean", "".join(f"line {i:04d} {'z' * (i % 50)}\r\n" for i in range(120)))
    bodies = [message("clean", "a\r\nb\r\n"), message("no final newline", "last"), message("dots", ".x\r\n.."), big]
    uids = await deliver(store, *bodies, b"Subject: lf\n\nline\n")
    box = store.keys.mailbox(USER)
    snapshot = await store.mailboxes.snapshot(USER)
    assert [info.wire for info in snapshot] == [True, True, False, True, True]
    batch = "".join(f"RETR {n}\r\n" for n in range(1, len(uids) + 1)) + "TOP 4 2\r\nQUIT\r\n"

    async def transcript() -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.ports["pop3"])
        writer.write(f"USER {USER}\r\nPASS {PASSWORD}\r\n{batch}".encode())
        data = await asyncio.wait_for(reader.read(-1), 10)
        writer.close()
        return data

    flagged = await transcript()
    await store.redis.delete(box.wire)
    assert not any(info.wire for info in await store.mailboxes.snapshot(USER))
    assert await transcript() == flagged
    assert b"\r\n..x\r\n...\r\n.\r\n" in flagged and b"\r\nlast\r\n.\r\n" in flagged


async def test_big_message_streams_in_chunks(start_pop3: StartServer, account: str, store: Store) -> None:
    server = await start_pop3(pop3_chunk_size=1024)
    # Dots at and around every chunk boundary, CR and LF split across boundaries.
    lines: list[bytes] = []
    while sum(len(line) for line in lines) < 300_000:
        i = len(lines)
        lines.append(b"." * (i % 3) + b"x" * (i * 37 % 1030) + b"\r\n")
    stored = b"Subject: big\r\n\r\n" + b"".join(lines)
    await deliver(store, stored)
    client = await Client.connect(server.ports["pop3"])
    await client.login()
    assert await client.cmd("LIST 1") == f"+OK 1 {len(stored)}"
    assert await client.cmd("RETR 1") == f"+OK {len(stored)} octets"
    assert unstuff(await client.raw_multiline()) == stored
    assert await client.cmd("TOP 1 3") == "+OK " + replies.OK_TOP.text
    assert unstuff(await client.raw_multiline()) == b"Subject: big\r\n\r\n" + b"".join(lines[:3])
    assert (await client.cmd("NOOP")).startswith("+OK")
    await client.close()


async def test_slow_reader_gets_the_whole_message(start_pop3: StartServer, account: str, store: Store) -> None:
    """Back-pressure: a client that reads slowly still receives everything, in order."""
    server = await start_pop3(pop3_chunk_size=4096)
    stored = b"Subject: slow\r\n\r\n" + b"".join(b"%06d .....\r\n" % i for i in range(200_000))
    await deliver(store, stored)
    client = await Client.connect(server.ports["pop3"])
    await client.login()
    await client.send("RETR 1\r\n")
    assert (await client.line()).startswith("+OK")
    received = bytearray()
    while not received.endswith(b"\r\n.\r\n"):
        chunk = await asyncio.wait_for(client.reader.read(1000), 20)
        assert chunk
        received += chunk
    assert unstuff(bytes(received[:-3])) == stored
    await client.close()


async def test_pipelined_commands_answered_in_order(pop3: Pop3Server, account: str, store: Store) -> None:
    bodies = [message(f"p{i}") for i in range(5)]
    await deliver(store, *bodies)
    client = await Client.connect(pop3.ports["pop3"])
    from tests.pop3.conftest import PASSWORD

    batch = f"CAPA\r\nUSER {USER}\r\nPASS {PASSWORD}\r\nSTAT\r\n" + "".join(f"RETR {n}\r\n" for n in range(1, 6))
    batch += "DELE 1\r\nLIST 1\r\nNOOP\r\nQUIT\r\n"
    await client.send(batch)
    capa_head = await client.line()
    assert capa_head.startswith("+OK")
    await client.raw_multiline()
    assert (await client.line()).startswith("+OK")  # USER
    assert (await client.line()).startswith("+OK Maildrop has 5")
    assert await client.line() == f"+OK 5 {sum(map(len, bodies))}"
    for body in bodies:
        assert await client.line() == f"+OK {len(body)} octets"
        assert unstuff(await client.raw_multiline()) == body
    assert await client.line() == "+OK Message 1 deleted"
    assert await client.line() == "-ERR " + replies.ERR_NO_SUCH_MESSAGE.text
    assert await client.line() == "+OK"
    assert await client.line() == "+OK " + replies.ok_update(4).text
    assert await client.closed()
    assert len(await store.mailboxes.snapshot(USER)) == 4


async def test_pipelining_flood_is_bounded(pop3: Pop3Server, account: str, store: Store) -> None:
    """Thousands of pipelined commands without reading replies: the server pauses, then catches up."""
    client = await Client.connect(pop3.ports["pop3"])
    await client.login()
    count = 5000
    writer_task = asyncio.create_task(client.send("NOOP\r\n" * count))
    for _ in range(count):
        assert await client.line() == "+OK"
    await writer_task
    assert await client.cmd("QUIT") == "+OK " + replies.ok_update(0).text


async def test_half_closed_client_gets_every_reply(pop3: Pop3Server, account: str, store: Store) -> None:
    from tests.pop3.conftest import PASSWORD

    body = message("half-close")
    await deliver(store, body)
    client = await Client.connect(pop3.ports["pop3"])
    await client.send(f"USER {USER}\r\nPASS {PASSWORD}\r\nRETR 1\r\nDELE 1\r\nQUIT\r\n")
    client.writer.write_eof()
    assert (await client.line()).startswith("+OK")
    assert (await client.line()).startswith("+OK Maildrop")
    assert (await client.line()).startswith("+OK")
    assert unstuff(await client.raw_multiline()) == body
    assert (await client.line()).startswith("+OK Message 1 deleted")
    assert await client.line() == "+OK " + replies.ok_update(0).text
    assert await client.closed()
    assert await store.mailboxes.snapshot(USER) == []


async def _pipelined_transcript(port: int, batch: str) -> bytes:
    client = await Client.connect(port)
    await client.login()
    await client.send(batch)
    transcript = await asyncio.wait_for(client.reader.read(), 20)  # to the close after QUIT
    await client.close()
    return transcript


async def test_pipelined_retrs_read_ahead_send_what_one_by_one_reads_send(
    start_pop3: StartServer, account: str, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first chunks of a pipelined RETR/TOP batch are read in one round trip; the bytes sent do not change."""
    from services.pop3 import session
    from services.store.mailbox import Mailboxes

    server = await start_pop3(pop3_chunk_size=1024)
    big = message("big", "".join(f".{i:04d} {'z' * (i % 50)}\r\n" for i in range(120)))
    uids = await deliver(store, *(message(f"m{i}", ".dot\r\nx\r\n..\r\n") for i in range(6)), big)
    box = store.keys.mailbox(USER)
    raw = b"Subject: raw\n\n.hidden\r.\rend"  # bare line ends, as an older writer might have stored
    await store.redis.set(box.message(uids[3]), raw)
    await store.redis.hset(box.sizes, uids[3], len(raw))
    await store.redis.srem(box.wire, uids[3])
    await store.redis.delete(box.message(uids[4]))  # listed, body gone
    commands = ["DELE 2", *(f"RETR {n}" for n in range(1, 8)), "TOP 7 3", "RETR 99", "RETR 2", "TOP 1 0", "RETR 7"]
    batch = "".join(line + "\r\n" for line in ["NOOP", *commands, "RSET", "QUIT"])
    reads: list[int] = []
    read_many = Mailboxes.read_many

    async def counting(self: Mailboxes, address: str, uids: list[str]) -> list[bytes | None]:
        reads.append(len(uids))
        return await read_many(self, address, uids)

    monkeypatch.setattr(Mailboxes, "read_many", counting)
    ahead = await _pipelined_transcript(server.ports["pop3"], batch)
    assert (
        reads and reads[0] >= 4
    )  # the small messages of the batch were read ahead (how much arrived at once is up to the socket)

    monkeypatch.setattr(session, "PREFETCH_LINES", 0)
    one_by_one = await _pipelined_transcript(server.ports["pop3"], batch)
    assert ahead == one_by_one
    assert b"+OK 0 octets" not in ahead and ahead.count(b"\r\n.hidden") == 0 and b"\r\n..hidden\r\n" in ahead

    async def failing(self: Mailboxes, address: str, uids: list[str]) -> list[bytes | None]:
        raise ConnectionError("redis went away")

    monkeypatch.setattr(session, "PREFETCH_LINES", 64)
    monkeypatch.setattr(Mailboxes, "read_many", failing)
    assert await _pipelined_transcript(server.ports["pop3"], batch) == one_by_one  # each RETR reads for itself
    assert len(await store.mailboxes.snapshot(USER)) == 7  # RSET: nothing deleted


async def _absent(store: Store, key: str) -> bool:
    return not await store.redis.exists(key)


async def test_disconnect_in_a_read_ahead_batch_deletes_nothing(pop3: Pop3Server, account: str, store: Store) -> None:
    bodies = [message(f"d{i}", "x" * 4000 + "\r\n") for i in range(20)]
    await deliver(store, *bodies)
    client = await Client.connect(pop3.ports["pop3"])
    await client.login()
    await client.send("".join(f"DELE {n}\r\nRETR {n + 1}\r\n" for n in range(1, 20)))
    assert (await client.line()).startswith("+OK Message 1 deleted")
    client.writer.transport.abort()  # gone in the middle of the batch (RETRs still streaming), no QUIT
    lock = store.keys.mailbox(USER).lock
    # The first session's end (not a TTL) releases the lock; the Redis DEL is the condition to wait on.
    await wait_until(lambda: _absent(store, lock), what="lock released")
    second = await Client.connect(pop3.ports["pop3"])
    reply = await second.login()
    assert reply.startswith("+OK Maildrop has 20")
    await second.close()
    assert len(await store.mailboxes.snapshot(USER)) == 20
