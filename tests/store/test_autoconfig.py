"""Autoconfig and autodiscover served by the store process, checked against the documented formats, and every
port they advertise tried with a real client against the running ingress and POP3 services; `domain dns`."""

from __future__ import annotations

import json
import poplib
import smtplib
import ssl
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import Callable

import pytest

from services.pop3.config import Pop3Settings
from services.smtp_ingress.config import IngressSettings
from services.store import Store
from services.store.clientconfig.documents import OUTLOOK_NS, RESPONSE_NS
from shared.settings import load_settings
from tests.deploy.settings_check import environment
from tests.helpers import REDIS_URL, ServiceProcess, client_tls, free_port
from tests.store.migration import postroom_cli

DOMAIN = "clients.test"
# Thunderbird's config-v1.1.xml, as documented (wiki.mozilla.org/Thunderbird:Autoconfiguration:ConfigFileFormat).
SOCKET_TYPES = {"plain", "SSL", "STARTTLS"}
AUTHENTICATIONS = {
    "password-cleartext", "password-encrypted", "NTLM", "GSSAPI", "client-IP-address", "TLS-client-cert", "OAuth2",
    "none",
}  # fmt: skip
SERVER_FIELDS = ("hostname", "port", "socketType", "username", "authentication")


@pytest.fixture
def store_env() -> dict[str, str]:
    return {"POSTROOM_REDIS_URL": REDIS_URL, "POSTROOM_REDIS_CLUSTER": "false"}


def check_mozilla(document: bytes, domain: str) -> list[tuple[str, str, int, str]]:
    """Structure check of a clientConfig 1.1; returns (element, type, port, socketType) of each server."""
    root = ET.fromstring(document)
    assert root.tag == "clientConfig" and root.get("version") == "1.1"
    (provider,) = root.findall("emailProvider")
    assert provider.get("id") == domain
    assert [d.text for d in provider.findall("domain")] == [domain]
    for tag in ("displayName", "displayShortName"):
        assert len(provider.findall(tag)) == 1 and provider.findtext(tag)
    servers = []
    for element in provider:
        if element.tag not in ("incomingServer", "outgoingServer"):
            assert element.tag in ("domain", "displayName", "displayShortName"), element.tag
            continue
        kind = element.get("type")
        assert kind in ({"pop3", "imap"} if element.tag == "incomingServer" else {"smtp"}), kind
        assert [child.tag for child in element] == list(SERVER_FIELDS), element
        port = int(element.findtext("port") or "")
        assert 0 < port < 65536
        assert element.findtext("socketType") in SOCKET_TYPES
        assert element.findtext("authentication") in AUTHENTICATIONS
        assert element.findtext("hostname") and element.findtext("username") == "%EMAILADDRESS%"
        servers.append((element.tag, str(kind), port, str(element.findtext("socketType"))))
    return servers


def get(url: str, host: str | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers={"Host": host} if host else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def post(url: str, body: bytes) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "text/xml"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def autodiscover_request(address: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n'
        '<Autodiscover xmlns="http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006">'
        f"<Request><EMailAddress>{address}</EMailAddress><AcceptableResponseSchema>{OUTLOOK_NS}"
        "</AcceptableResponseSchema></Request></Autodiscover>"
    ).encode()


def connects(protocol: str, port: int, implicit_tls: bool) -> bool:
    """A real client reaches the port and gets TLS the way the document says (implicit, or STLS/STARTTLS)."""
    context = client_tls()
    if protocol == "pop3":
        pop = poplib.POP3_SSL("127.0.0.1", port, context=context, timeout=10) if implicit_tls else _pop3_stls(port)
        secure = isinstance(pop.sock, ssl.SSLSocket)
        pop.quit()
        return secure
    if implicit_tls:
        smtp: smtplib.SMTP = smtplib.SMTP_SSL("127.0.0.1", port, context=context, timeout=10)
    else:
        smtp = smtplib.SMTP("127.0.0.1", port, timeout=10)
        smtp.starttls(context=context)
    smtp.ehlo()
    secure = isinstance(smtp.sock, ssl.SSLSocket) and smtp.has_extn("auth")
    smtp.quit()
    return secure


def _pop3_stls(port: int) -> poplib.POP3:
    pop = poplib.POP3("127.0.0.1", port, timeout=10)
    pop.stls(client_tls())
    return pop


async def test_documents_describe_the_listeners_the_services_run(
    start_service: Callable[..., ServiceProcess], base_env: dict[str, str], store: Store
) -> None:
    await store.accounts.add_domain(DOMAIN)
    listen = f"127.0.0.1:{free_port()}"
    start_service("store", POSTROOM_AUTOCONFIG_LISTEN=listen)
    start_service("pop3")
    start_service("smtp_ingress")
    base = f"http://{listen}"

    status, document = get(f"{base}/mail/config-v1.1.xml?emailaddress=carol@{DOMAIN}")
    assert status == 200, document
    servers = check_mozilla(document, DOMAIN)
    assert ET.fromstring(document).findtext("emailProvider/incomingServer/hostname") == "mx.postroom.test"
    # The ports are those of the settings the services read from the same environment.
    with environment(base_env):
        pop3, ingress = load_settings(Pop3Settings), load_settings(IngressSettings)
    assert pop3.pop3s_listen and pop3.pop3_listen and ingress.smtps_listen and ingress.submission_listen
    assert servers == [
        ("incomingServer", "pop3", pop3.pop3s_listen.port, "SSL"),
        ("incomingServer", "pop3", pop3.pop3_listen.port, "STARTTLS"),
        ("outgoingServer", "smtp", ingress.smtps_listen.port, "SSL"),
        ("outgoingServer", "smtp", ingress.submission_listen.port, "STARTTLS"),
    ]
    for _, kind, port, socket_type in servers:
        assert connects(kind, port, socket_type == "SSL"), (kind, port)

    # The well-known path, the domain from the Host header (autoconfig.DOMAIN), as Thunderbird asks without address.
    assert get(f"{base}/.well-known/autoconfig/mail/config-v1.1.xml", host=f"autoconfig.{DOMAIN}") == (200, document)
    # Only our domains; nonsense is a 400, never a 500.
    assert get(f"{base}/mail/config-v1.1.xml?emailaddress=x@elsewhere.test")[0] == 404
    assert get(f"{base}/mail/config-v1.1.xml?emailaddress=not-an-address")[0] == 400
    assert get(f"{base}/mail/config-v1.1.xml", host="bad_host..")[0] == 400

    status, reply = post(f"{base}/autodiscover/autodiscover.xml", autodiscover_request(f"carol@{DOMAIN}"))
    assert status == 200, reply
    root = ET.fromstring(reply)
    assert root.tag == f"{{{RESPONSE_NS}}}Autodiscover"
    account = root.find(f"{{{OUTLOOK_NS}}}Response/{{{OUTLOOK_NS}}}Account")
    assert account is not None and account.findtext(f"{{{OUTLOOK_NS}}}AccountType") == "email"
    protocols = {
        p.findtext(f"{{{OUTLOOK_NS}}}Type"): (
            int(p.findtext(f"{{{OUTLOOK_NS}}}Port") or ""),
            p.findtext(f"{{{OUTLOOK_NS}}}Encryption"),
            p.findtext(f"{{{OUTLOOK_NS}}}LoginName"),
        )
        for p in account.findall(f"{{{OUTLOOK_NS}}}Protocol")
    }
    assert protocols == {
        "POP3": (pop3.pop3s_listen.port, "SSL", f"carol@{DOMAIN}"),
        "SMTP": (ingress.smtps_listen.port, "SSL", f"carol@{DOMAIN}"),
    }
    assert post(f"{base}/Autodiscover/Autodiscover.xml", autodiscover_request("x@elsewhere.test"))[0] == 404
    assert post(f"{base}/autodiscover/autodiscover.xml", b"<not xml")[0] == 400
    assert post(f"{base}/autodiscover/autodiscover.xml", b"x" * 20000)[0] == 413


def test_client_ports_override_the_listen_ports_and_off_listeners_leave(store_env: dict[str, str]) -> None:
    from services.store.clientconfig.documents import ClientSettings, mozilla_autoconfig
    from services.store.config import StoreSettings

    env = {
        "POSTROOM_POP3_LISTEN": "",
        "POSTROOM_SUBMISSION_LISTEN": "0.0.0.0:2587",
        "POSTROOM_CLIENT_PORTS": "submission=587",
    }
    with environment(env):
        settings = load_settings(StoreSettings)
    servers = check_mozilla(mozilla_autoconfig(ClientSettings(DOMAIN, "mx", settings.client_endpoints)), DOMAIN)
    assert [(kind, port, tls) for _, kind, port, tls in servers] == [
        ("pop3", 995, "SSL"), ("smtp", 465, "SSL"), ("smtp", 587, "STARTTLS"),
    ]  # fmt: skip


async def test_domain_dns_lists_every_record(namespace: str, store_env: dict[str, str], store: Store) -> None:
    await store.accounts.add_domain(DOMAIN)
    key = await store.dkim.generate(DOMAIN, "ed1", "ed25519")
    postroom = postroom_cli(namespace, store_env)
    env = {"POSTROOM_HOSTNAME": "mx.clients.test", "POSTROOM_AUTOCONFIG_LISTEN": ":8081", "POSTROOM_POP3_LISTEN": ""}
    result = postroom("domain", "dns", DOMAIN, "--json", **env)
    assert result.exit_code == 0, result.output
    records = {(r["name"], r["type"]): r["value"] for r in json.loads(result.stdout)}
    zone = f"{DOMAIN}."
    assert records == {
        (zone, "MX"): "10 mx.clients.test.",
        (zone, "TXT"): '"v=spf1 mx -all"',
        (f"_dmarc.{zone}", "TXT"): f'"v=DMARC1; p=quarantine; rua=mailto:postmaster@{DOMAIN}"',
        (f"ed1._domainkey.{zone}", "TXT"): f'"v=DKIM1; k=ed25519; p={key.public_key}"',
        (f"autoconfig.{zone}", "CNAME"): "mx.clients.test.",
        (f"autodiscover.{zone}", "CNAME"): "mx.clients.test.",
        (f"_submissions._tcp.{zone}", "SRV"): "0 1 465 mx.clients.test.",
        (f"_submission._tcp.{zone}", "SRV"): "10 1 587 mx.clients.test.",
        (f"_pop3s._tcp.{zone}", "SRV"): "0 1 995 mx.clients.test.",
        (f"_pop3._tcp.{zone}", "SRV"): "0 0 0 .",  # off: RFC 6186 §4
        (f"_imaps._tcp.{zone}", "SRV"): "0 0 0 .",
        (f"_imap._tcp.{zone}", "SRV"): "0 0 0 .",
    }
    text = postroom("domain", "dns", DOMAIN, **env).stdout
    lines = [" ".join(line.split()) for line in text.splitlines()]
    assert "_submissions._tcp.clients.test. 3600 IN SRV 0 1 465 mx.clients.test." in lines
    plain = postroom("domain", "dns", DOMAIN, POSTROOM_HOSTNAME="mx.clients.test")
    assert "autoconfig." not in plain.stdout.replace("POSTROOM_AUTOCONFIG_LISTEN", "")
    missing = postroom("domain", "dns", "elsewhere.test")
    assert missing.exit_code == 1 and missing.stderr.strip() == "postroom: error: no such domain elsewhere.test"
