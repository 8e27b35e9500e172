"""Bad input: line length limit, bad-command limit, wrong states, syntax errors, autologout before login."""

from __future__ import annotations

import asyncio

from services.pop3 import metrics, replies
from services.pop3.server import Pop3Server
from tests.helpers import wait_until
from tests.pop3.conftest import Client, StartServer


async def test_long_line_is_refused_without_buffering_it(start_pop3: StartServer, account: str) -> None:
    server = await start_pop3(pop3_line_limit=1024)
    client = await Client.connect(server.ports["pop3"])
    # 4 MiB without a line end: the server discards as it goes, and answers once the line ends.
    chunk = b"A" * 65536
    for _ in range(64):
        await client.send(chunk)
    await client.send(b"\r\n")
    assert await client.line() == "-ERR " + replies.ERR_LINE_TOO_LONG.text
    assert (await client.login()).startswith("+OK")
    await client.close()


async def test_too_many_bad_commands_close(start_pop3: StartServer) -> None:
    server = await start_pop3(pop3_max_bad_commands=4)
    client = await Client.connect(server.ports["pop3"])
    before = metrics.SESSIONS_CLOSED.labels("bad_commands")._value.get()
    assert await client.cmd("HELO") == "-ERR Unknown command"
    assert await client.cmd("STAT") == "-ERR " + replies.ERR_WRONG_STATE.text
    assert await client.cmd("RETR x") == "-ERR Invalid message number"
    assert await client.cmd("NOPE") == "-ERR " + replies.ERR_TOO_MANY_BAD_COMMANDS.text
    assert await client.closed()

    async def counted() -> bool:
        return bool(metrics.SESSIONS_CLOSED.labels("bad_commands")._value.get() == before + 1)

    await wait_until(counted, timeout=5, what="close counted")


async def test_wrong_state_and_syntax(start_pop3: StartServer, account: str) -> None:
    server = await start_pop3(pop3_max_bad_commands=50)
    client = await Client.connect(server.ports["pop3"])
    wrong = "-ERR " + replies.ERR_WRONG_STATE.text
    for command in ("LIST", "RETR 1", "DELE 1", "RSET", "NOOP", "TOP 1 1", "UIDL"):
        assert await client.cmd(command) == wrong
    assert await client.cmd("PASS x") == "-ERR " + replies.ERR_NEED_USER.text
    assert (await client.login()).startswith("+OK")
    for command in ("USER x", "PASS y", "AUTH PLAIN", "UTF8", "STLS", "APOP a b"):
        assert await client.cmd(command) == wrong
    assert await client.cmd("LIST 0") == "-ERR " + replies.ERR_NO_SUCH_MESSAGE.text
    assert await client.cmd("TOP 1") == "-ERR Wrong number of arguments for TOP"
    assert await client.cmd("retr\x001") == "-ERR Control characters are not allowed in commands"
    assert (await client.cmd("QUIT")).startswith("+OK")


async def test_autologout_before_login(start_pop3: StartServer) -> None:
    server = await start_pop3(pop3_autologout=0.3)
    client = await Client.connect(server.ports["pop3"])
    assert await client.closed()


async def test_bare_lf_and_lowercase_commands(pop3: Pop3Server, account: str) -> None:
    client = await Client.connect(pop3.ports["pop3"])
    await client.send("capa\n")
    assert (await client.line()).startswith("+OK")
    await client.raw_multiline()
    await client.close()


async def test_connection_caps(start_pop3: StartServer) -> None:
    server = await start_pop3(pop3_max_connections_per_ip=3)
    clients = [await Client.connect(server.ports["pop3"]) for _ in range(3)]
    before = metrics.CONNECTIONS_REFUSED._value.get()
    reader, writer = await asyncio.open_connection("127.0.0.1", server.ports["pop3"])
    assert await reader.readline() == replies.ERR_TOO_MANY_CONNECTIONS.encode()
    assert await reader.read(1) == b""
    writer.close()
    assert metrics.CONNECTIONS_REFUSED._value.get() == before + 1
    await clients[0].cmd("QUIT")
    await clients[0].closed()

    async def admitted() -> bool:
        probe = await asyncio.open_connection("127.0.0.1", server.ports["pop3"])
        greeting = await probe[0].readline()
        probe[1].close()
        return greeting.startswith(b"+OK")

    await wait_until(admitted, timeout=5, what="a slot freed by QUIT")
    for client in clients[1:]:
        await client.close()
