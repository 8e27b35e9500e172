"""A tiny authoritative DNS server on loopback (dnspython), answering from a dict, for MX routing tests."""

from __future__ import annotations

import socket
import threading
from dataclasses import dataclass, field

import dns.flags
import dns.message
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset


@dataclass
class Zone:
    """name → {"MX": ["10 mx1.remote.test."], "A": ["127.25.0.1"]}; names not listed answer NXDOMAIN."""

    records: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    servfail: set[str] = field(default_factory=set)
    silent: set[str] = field(default_factory=set)  # never answered: the resolver times out
    # Answered with the AD bit, as a validating resolver does for a DNSSEC-signed zone (DANE tests).
    secure: set[str] = field(default_factory=set)

    def add(self, name: str, rtype: str, *values: str) -> None:
        self.records.setdefault(name.lower().rstrip("."), {}).setdefault(rtype, []).extend(values)


class DNSServer:
    """Serves `zone` over UDP on 127.0.0.1 from a thread; `nameserver` is a POSTROOM_DNS_NAMESERVERS value."""

    def __init__(self, zone: Zone) -> None:
        self.zone = zone
        self.queries: list[tuple[str, str]] = []
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def nameserver(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> DNSServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, peer = self.sock.recvfrom(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            reply = self.answer(data)
            if reply is not None:
                self.sock.sendto(reply, peer)

    def answer(self, data: bytes) -> bytes | None:
        query = dns.message.from_wire(data)
        response = dns.message.make_response(query)
        question = query.question[0]
        name = question.name.to_text(omit_final_dot=True).lower()
        rtype = dns.rdatatype.to_text(question.rdtype)
        self.queries.append((name, rtype))
        if name in self.zone.silent:
            return None
        if name in self.zone.secure:
            response.flags |= dns.flags.AD
        if name in self.zone.servfail:
            response.set_rcode(dns.rcode.SERVFAIL)
        elif name not in self.zone.records:
            response.set_rcode(dns.rcode.NXDOMAIN)
        else:
            values = self.zone.records[name].get(rtype, [])
            if values:
                response.answer.append(dns.rrset.from_text_list(question.name, 60, dns.rdataclass.IN, rtype, values))
        return response.to_wire()
