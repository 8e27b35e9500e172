"""STLS (RFC 2595) and implicit TLS: upgrades, plaintext injection after STLS, state rules."""

from __future__ import annotations

import asyncio
import ssl

from services.pop3 import replies
from services.pop3.server import Pop3Server
from tests.helpers import client_tls
from tests.pop3.conftest import PASSWORD, USER, Client


async def _upgrade(client: Client) -> None:
    await client.writer.start_tls(client_tls())


async def test_stls_discards_pipelined_plaintext(pop3: Pop3Server, account: str) -> None:
    """RFC 2595 §4 / the STARTTLS command-injection class of bugs: nothing sent before the handshake survives it."""
    client = await Client.connect(pop3.ports["pop3"])
    await client.send(f"STLS\r\nUSER {USER}\r\nCAPA\r\n")
    assert await client.line() == "+OK " + replies.OK_STLS.text
    await _upgrade(client)
    # Had "USER" survived, PASS would be accepted; had CAPA survived, its reply would come first.
    assert await client.cmd(f"PASS {PASSWORD}") == "-ERR " + replies.ERR_NEED_USER.text
    assert (await client.login()).startswith("+OK")
    await client.close()


async def test_stls_state_rules(pop3: Pop3Server, account: str) -> None:
    client = await Client.connect(pop3.ports["pop3"])
    assert (await client.cmd("STLS")).startswith("+OK")
    await _upgrade(client)
    assert await client.cmd("STLS") == "-ERR " + replies.ERR_ALREADY_TLS.text
    _, capa = await client.multiline("CAPA")
    assert "STLS" not in capa and "USER" in capa
    assert (await client.login()).startswith("+OK")
    assert await client.cmd("STLS") == "-ERR " + replies.ERR_WRONG_STATE.text
    await client.close()

    implicit = await Client.connect(pop3.ports["pop3s"], tls=True)
    assert await implicit.cmd("STLS") == "-ERR " + replies.ERR_ALREADY_TLS.text
    await implicit.close()


async def test_stls_forgets_user_given_before(pop3: Pop3Server, account: str) -> None:
    client = await Client.connect(pop3.ports["pop3"])
    assert (await client.cmd(f"USER {USER}")).startswith("+OK")
    assert (await client.cmd("STLS")).startswith("+OK")
    await _upgrade(client)
    assert await client.cmd(f"PASS {PASSWORD}") == "-ERR " + replies.ERR_NEED_USER.text
    await client.close()


async def test_failed_handshake_closes_only_that_session(pop3: Pop3Server, account: str) -> None:
    client = await Client.connect(pop3.ports["pop3"])
    assert (await client.cmd("STLS")).startswith("+OK")
    await client.send(b"this is not a TLS ClientHello\r\n" * 10)
    assert await client.closed()
    other = await Client.connect(pop3.ports["pop3"])
    assert (await other.login()).startswith("+OK")
    await other.close()


async def test_plaintext_to_the_tls_port_is_dropped(pop3: Pop3Server) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", pop3.ports["pop3s"])
    writer.write(b"CAPA\r\n")
    await writer.drain()
    assert await asyncio.wait_for(reader.read(100), 20) == b""
    writer.close()
    other = await Client.connect(pop3.ports["pop3s"], tls=True)
    assert isinstance(other.writer.get_extra_info("ssl_object"), ssl.SSLObject)
    await other.close()
