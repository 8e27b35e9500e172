"""Every DNS record a local domain needs for mail to and from Postroom, and for clients to find it.

MX (RFC 5321 §5), SPF (RFC 7208), DMARC (RFC 7489), DKIM (RFC 6376) when the store holds keys, the autoconfig and
autodiscover names, and SRV records for submission and POP3 (RFC 6186; RFC 8314 §5.1 adds `_submissions` and
prefers implicit TLS, hence its lower priority value). A service that is off, and IMAP, which Postroom does not
offer, get the target "." (RFC 6186 §4: "decidedly not available"), so clients stop looking for them.
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.client_ports import Endpoint

TTL = 3600


@dataclass(frozen=True)
class Record:
    name: str  # fully qualified, with the trailing dot
    type: str
    value: str
    purpose: str
    ttl: int = TTL

    def zone_line(self) -> str:
        return f"{self.name:<34} {self.ttl:>5} IN {self.type:<5} {self.value}"


def _txt(text: str) -> str:
    """A TXT value in zone-file form: strings of at most 255 octets (RFC 1035 §3.3.14), each quoted."""
    chunks = [text[i : i + 255] for i in range(0, len(text), 255)] or [""]
    return " ".join('"' + chunk.replace("\\", "\\\\").replace('"', '\\"') + '"' for chunk in chunks)


def domain_records(
    domain: str,
    hostname: str,
    endpoints: list[Endpoint],
    autoconfig: bool,
    dkim: list[tuple[str, str]] | None = None,
) -> list[Record]:
    """`dkim`: (selector, TXT value such as `v=DKIM1; k=rsa; p=…`) for each key the store holds for `domain`."""
    zone, host = f"{domain}.", f"{hostname}."
    records = [
        Record(zone, "MX", f"10 {host}", "mail for the domain goes to Postroom"),
        Record(zone, "TXT", _txt("v=spf1 mx -all"), "SPF: only the MX host sends for the domain"),
        Record(
            f"_dmarc.{zone}",
            "TXT",
            _txt(f"v=DMARC1; p=quarantine; rua=mailto:postmaster@{domain}"),
            "DMARC: receivers quarantine what fails SPF and DKIM, reports go to postmaster",
        ),
    ]
    for selector, value in dkim or []:
        records.append(Record(f"{selector}._domainkey.{zone}", "TXT", _txt(value), "DKIM public key"))
    if autoconfig:
        records += [
            Record(f"autoconfig.{zone}", "CNAME", host, "Thunderbird and others fetch their settings here"),
            Record(f"autodiscover.{zone}", "CNAME", host, "Outlook fetches its settings here"),
        ]
    records += [_srv(zone, host, endpoint) for endpoint in endpoints]
    for service in ("imaps", "imap"):
        records.append(Record(f"_{service}._tcp.{zone}", "SRV", "0 0 0 .", "no IMAP here (RFC 6186 §4)"))
    return records


def _srv(zone: str, host: str, endpoint: Endpoint) -> Record:
    name = f"_{endpoint.service}._tcp.{zone}"
    if endpoint.port is None:
        return Record(name, "SRV", "0 0 0 .", f"{endpoint.service} is off (RFC 6186 §4)")
    tls = "implicit TLS" if endpoint.implicit_tls else "STARTTLS"
    priority = 0 if endpoint.implicit_tls else 10  # RFC 8314 §5.1: clients compare them across the two names
    what = "SMTP submission" if endpoint.protocol == "smtp" else "POP3"
    return Record(name, "SRV", f"{priority} 1 {endpoint.port} {host}", f"{what} with {tls} (RFC 6186, RFC 8314)")
