"""Mozilla autoconfig (config-v1.1.xml) and Microsoft autodiscover (POX, 2006a) documents for POP3 and submission.

Mozilla's format: https://wiki.mozilla.org/Thunderbird:Autoconfiguration:ConfigFileFormat (clientConfig 1.1:
emailProvider with domain, displayName, then incomingServer and outgoingServer, each with hostname, port,
socketType SSL|STARTTLS|plain, username, authentication). Microsoft's: [MS-OXDSCLI] (Autodiscover with Response in
the outlook/responseschema/2006a namespace, Account, Protocol with Type POP3|SMTP, Server, Port, SSL, Encryption).
Both list implicit TLS first: RFC 8314 §3 prefers it, and clients take the first entry they can use.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass

from shared.client_ports import Endpoint

REQUEST_NS = "http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006"
RESPONSE_NS = "http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006"
OUTLOOK_NS = "http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a"


@dataclass(frozen=True)
class ClientSettings:
    """Everything the documents say: the mail domain, the server's host name and the endpoints that are on."""

    domain: str
    hostname: str
    endpoints: list[Endpoint]

    def enabled(self, protocol: str) -> list[Endpoint]:
        return [e for e in self.endpoints if e.protocol == protocol and e.port is not None]


def _text(parent: ET.Element, tag: str, value: str) -> ET.Element:
    element = ET.SubElement(parent, tag)
    element.text = value
    return element


def _serialise(root: ET.Element) -> bytes:
    ET.indent(root)
    return bytes(ET.tostring(root, encoding="utf-8", xml_declaration=True)) + b"\n"


def mozilla_autoconfig(settings: ClientSettings) -> bytes:
    root = ET.Element("clientConfig", version="1.1")
    provider = ET.SubElement(root, "emailProvider", id=settings.domain)
    _text(provider, "domain", settings.domain)
    _text(provider, "displayName", f"{settings.domain} mail")
    _text(provider, "displayShortName", settings.domain)
    for protocol, tag, kind in (("pop3", "incomingServer", "pop3"), ("smtp", "outgoingServer", "smtp")):
        for endpoint in settings.enabled(protocol):
            server = ET.SubElement(provider, tag, type=kind)
            _text(server, "hostname", settings.hostname)
            _text(server, "port", str(endpoint.port))
            _text(server, "socketType", "SSL" if endpoint.implicit_tls else "STARTTLS")
            _text(server, "username", "%EMAILADDRESS%")
            _text(server, "authentication", "password-cleartext")  # inside TLS only: both listeners require it
    return _serialise(root)


def autodiscover_request_address(body: bytes) -> str | None:
    """The EMailAddress of an autodiscover request, or None when the body is not one.

    ElementTree never fetches external entities, and the expat it uses (2.4.1 and later) refuses entity
    expansion bombs; the app bounds the body's size before this."""
    try:
        root = ET.fromstring(body)
    except ET.ParseError:
        return None
    element = root.find(f"{{{REQUEST_NS}}}Request/{{{REQUEST_NS}}}EMailAddress")
    if element is None:
        element = root.find("Request/EMailAddress")  # some clients leave the namespace out
    return element.text.strip() if element is not None and element.text else None


def microsoft_autodiscover(settings: ClientSettings, address: str) -> bytes:
    # Plain tags with xmlns attributes: the default-namespace form every Outlook version parses (ElementTree's own
    # namespace handling would write ns0: prefixes, valid XML that not every client reads).
    root = ET.Element("Autodiscover", xmlns=RESPONSE_NS)
    response = ET.SubElement(root, "Response", xmlns=OUTLOOK_NS)
    account = ET.SubElement(response, "Account")
    _text(account, "AccountType", "email")
    _text(account, "Action", "settings")
    for protocol, kind in (("pop3", "POP3"), ("smtp", "SMTP")):
        enabled = settings.enabled(protocol)
        if not enabled:
            continue
        endpoint = enabled[0]  # one per type: Outlook reads the first Protocol of each Type
        element = ET.SubElement(account, "Protocol")
        for tag, value in (
            ("Type", kind),
            ("Server", settings.hostname),
            ("Port", str(endpoint.port)),
            ("LoginName", address),
            ("DomainRequired", "off"),
            ("SPA", "off"),
            ("SSL", "on"),
            ("Encryption", "SSL" if endpoint.implicit_tls else "TLS"),
            ("AuthRequired", "on"),
        ):
            _text(element, tag, value)
    return _serialise(root)
