"""Remote delivery over SMTP with aiosmtplib: next hops in order, STARTTLS or implicit TLS, per-recipient results."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, replace

import aiosmtplib

from services.delivery import dane, metrics, outcome, transport_map
from services.delivery.config import DeliverySettings
from services.delivery.dsnrequest import mail_parameters, rcpt_parameters
from services.delivery.mtasts import MtaSts, StsPolicy
from services.delivery.mx import MailHost, MailResolver, is_ip_literal
from services.delivery.outcome import RecipientOutcome
from services.delivery.replytext import readable, reply
from services.delivery.routing import Target
from services.delivery.smtpdata import send_data
from services.delivery.tls import HopTLS, OutboundTLS
from services.delivery.tlsrpt import TlsResults
from services.delivery.transport_map import SMTP_PORT, Route
from services.store.idn import ascii_address
from shared.envelope import Envelope
from shared.errors import PermanentError, PostroomError, TemporaryError
from shared.logging import get_logger

log = get_logger(__name__)

TRANSPORT = "smtp"
# A hop answered in a way that says "try the next one" (connection, greeting, EHLO, 4xx to MAIL).
_HOP_FAILURES = (aiosmtplib.SMTPException, OSError, TimeoutError, ssl.SSLError)


class _TLSFailed(Exception):
    """The STARTTLS handshake or the EHLO after it failed."""


class _TLSRefused(Exception):
    """A hop that must have verified TLS does not offer it, or its certificate does not verify: nothing was sent
    beyond EHLO (and STARTTLS)."""

    def __init__(self, error: TemporaryError, result: str = "validation-failure") -> None:
        super().__init__(error.message)
        self.error = error
        self.result = result  # the RFC 8460 result type, for TLS-RPT


@dataclass(frozen=True)
class _Message:
    """What DATA sends: header fields we add (DKIM signatures) in front of the queued message, never joined."""

    prefix: bytes
    body: bytes


@dataclass(frozen=True)
class Hop:
    host: str
    address: str
    port: int
    tls: HopTLS
    relay: bool = False  # the relay host: authenticate when credentials are configured
    domain: str = ""  # the recipient domain whose policy (MTA-STS, DANE) secures this hop, for TLS-RPT


class RemoteDelivery:
    """Delivers one message to the recipients of one domain; returns an outcome per recipient, never raises
    for a remote or DNS failure."""

    def __init__(
        self,
        settings: DeliverySettings,
        resolver: MailResolver,
        mta_sts: MtaSts | None = None,
        results: TlsResults | None = None,
    ) -> None:
        self.settings = settings
        self.resolver = resolver
        self.tls = OutboundTLS(settings.relay_tls_ca_file, settings.delivery_tls_ca_file)
        self.mta_sts = mta_sts
        self.results = results

    async def __call__(
        self, envelope: Envelope, body: bytes, domain: str, targets: Sequence[Target], signature: bytes = b""
    ) -> list[RecipientOutcome]:
        """`signature`: header fields (the DKIM signatures) sent in front of `body`."""
        route = transport_map.lookup(self.settings.transport_map, domain)
        relay = route is None and self.settings.relay_host is not None
        route = route or self.settings.relay_host or _literal_route(domain)
        last_error: PostroomError = TemporaryError("no mail host answered", enhanced="4.4.1")
        tried = 0
        try:
            async for hop in self._hops(domain, route, relay):
                tried += 1
                results = await self._session(hop, envelope, _Message(signature, body), targets)
                if isinstance(results, list):
                    return results
                last_error = results
        except PostroomError as exc:
            last_error = exc
        if tried == 0 and last_error.enhanced == "4.4.1":
            last_error = TemporaryError(f"no address found for the mail hosts of {domain}", enhanced="4.4.4")
        make = outcome.temporary if last_error.temporary else outcome.permanent
        return [_from(make(t.address, last_error.enhanced, last_error.message, TRANSPORT), t) for t in targets]

    async def _hops(self, domain: str, route: Route | None, relay: bool) -> AsyncIterator[Hop]:
        """Each address of each host in order: `[host]` routes skip MX lookup (Postfix transport semantics)."""
        port = route.port if route else SMTP_PORT
        if route is not None and not route.mx:
            hosts = [MailHost(route.host, 0)]
        else:
            hosts = await self.resolver.mail_hosts(route.host if route else domain)
        relay_tls = None
        if relay and route is not None:
            s = self.settings
            relay_tls = self.tls.for_relay(route.host, s.relay_authenticates, s.relay_uses_implicit_tls)
        # MTA-STS speaks for the recipient domain's own MX hosts only, not for a route the operator chose.
        policy = await self._sts_policy(domain) if route is None and not relay else None
        lookup_error: PostroomError | None = None
        refused: list[str] = []
        for host in hosts:
            if policy is not None and policy.enforced and not policy.allows(host.name):
                refused.append(host.name)  # RFC 8461 §4.1: never deliver to an MX the policy does not list
                continue
            try:
                addresses = await self.resolver.addresses(host.name)
                tls = relay_tls or await self._mx_tls(host, port, policy)
            except PostroomError as exc:
                lookup_error = exc  # this host's DNS is broken; the next MX may still work
                continue
            if addresses is None and host.implicit:
                # RFC 5321 §5.1: no MX and no address records: the domain has no mail host at all.
                raise PermanentError(f"domain {domain} has no MX and no address records", enhanced="5.1.2")
            for address in addresses or []:
                yield Hop(host.name, address, port, tls, relay, domain)
        if lookup_error is not None:
            raise lookup_error
        if refused:
            self._record(domain, "mta-sts", "certificate-host-mismatch")
            text = f"no MX host of {domain} matches its MTA-STS policy (refused {', '.join(refused)})"
            raise TemporaryError(text, enhanced="4.7.5")

    async def _sts_policy(self, domain: str) -> StsPolicy | None:
        if self.mta_sts is None or not self.settings.mta_sts:
            return None
        return await self.mta_sts.policy(domain)

    async def _mx_tls(self, host: MailHost, port: int, policy: StsPolicy | None) -> HopTLS:
        """DANE first (RFC 8461 §2: it takes precedence over MTA-STS), then an enforced MTA-STS policy, else
        opportunistic TLS."""
        if self.settings.dane:
            found = await dane.lookup(self.resolver, host.name, port, host.secure)
            if found is not None:
                return self.tls.for_dane(host.name, found)
        if policy is not None and policy.enforced:
            return self.tls.for_sts(host.name)
        return self.tls.for_mx(host.name)

    def _record(self, domain: str, policy: str, result: str) -> None:
        """A session's result under a TLS policy: a metric, and a TLS-RPT count when reports are sent."""
        metrics.tls_policy(policy, result).inc()
        if self.results is not None and domain:
            self.results.add(domain, policy, result)

    async def _session(
        self, hop: Hop, envelope: Envelope, message: _Message, targets: Sequence[Target]
    ) -> list[RecipientOutcome] | PostroomError:
        """One SMTP transaction. A list is a decision for every target; an error means: try the next hop."""
        policy = hop.tls.policy if hop.tls.policy in ("dane", "mta-sts") else None
        try:
            results = await self._transaction(hop, envelope, message, targets, tls=True)
        except _TLSRefused as exc:
            log.warning("no verified TLS; nothing sent", host=hop.host, address=hop.address, error=str(exc))
            if policy is not None:
                self._record(hop.domain, policy, exc.result)
            return exc.error
        except _TLSFailed as exc:
            # Opportunistic TLS (RFC 7435): a failed handshake is no reason not to deliver; try again in plaintext.
            log.info("STARTTLS failed; retrying in plaintext", host=hop.host, address=hop.address, error=str(exc))
        except _HOP_FAILURES as exc:
            return self._hop_error(hop, exc)
        else:
            if policy is not None:
                self._record(hop.domain, policy, "success")
            return results
        try:
            return await self._transaction(hop, envelope, message, targets, tls=False)
        except _HOP_FAILURES as exc:
            return self._hop_error(hop, exc)

    def _hop_error(self, hop: Hop, exc: BaseException) -> PostroomError:
        # Every reply and error text is made readable here, where it enters an outcome (replytext.py).
        if isinstance(exc, aiosmtplib.SMTPResponseException):
            text = f"{hop.host}[{hop.address}] said: {reply(exc.code, exc.message)}"
        else:
            error = f"{type(exc).__name__} {readable(str(exc))}".strip()
            text = f"connect to {hop.host}[{hop.address}]:{hop.port}: {error}"
        log.info("hop failed", host=hop.host, address=hop.address, error=text)
        return TemporaryError(text, enhanced="4.4.1")

    async def _transaction(
        self, hop: Hop, envelope: Envelope, message: _Message, targets: Sequence[Target], tls: bool
    ) -> list[RecipientOutcome]:
        s = self.settings
        # The TCP connect gets its own short timeout (a dead host should not hold us for 5 minutes); the 220
        # greeting then gets the RFC 5321 §4.5.3.2.1 five minutes.
        sock = await _connect(hop.address, hop.port, s.relay_connect_timeout)
        hop_tls = hop.tls
        # Implicit TLS (RFC 8314 §3.3): the handshake first, within the greeting timeout, then the 220 over it.
        client = aiosmtplib.SMTP(
            sock=sock,
            hostname=hop_tls.server_name,
            use_tls=hop_tls.implicit,
            tls_context=hop_tls.context,
            local_hostname=s.hostname,
            timeout=s.relay_command_timeout,
            start_tls=False,
            validate_certs=False,
        )
        try:
            await client.connect(timeout=s.relay_greeting_timeout)
        except BaseException as exc:
            sock.close()
            if hop_tls.required and _ssl_cause(exc) is not None:
                raise _TLSRefused(_unverified(hop, exc), _result_type(exc)) from exc
            raise
        try:
            await client.ehlo()
            if tls and not hop_tls.implicit and client.supports_extension("starttls"):
                try:
                    await client.starttls(tls_context=hop_tls.context, server_hostname=hop_tls.server_name)
                    await client.ehlo()
                except _HOP_FAILURES as exc:
                    if hop_tls.required:
                        raise _TLSRefused(_unverified(hop, exc), _result_type(exc)) from exc
                    raise _TLSFailed(readable(str(exc)) or type(exc).__name__) from exc
            elif hop_tls.required and not hop_tls.implicit:
                # RFC 3207 §4: a client that needs TLS and is not offered it must not go on in the clear. 4.7.4,
                # "security features not supported" (RFC 3463), as Postfix says when TLS is required and not offered.
                text = f"{hop.host}[{hop.address}] offers no STARTTLS; {_withheld(hop)}"
                raise _TLSRefused(TemporaryError(text, enhanced="4.7.4"), "starttls-not-supported")
            if hop_tls.dane is not None and hop_tls.dane.usable:
                _check_tlsa(client, hop)
            if hop.relay and s.relay_username is not None and s.relay_password is not None:
                # Reached only over TLS that verified: with credentials set the relay hop's TLS is `required`.
                await client.login(s.relay_username, s.relay_password.get_secret_value())
            return await self._send(client, hop, envelope, message, targets)
        finally:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                # The attempt's deadline (or a shutdown) cut the session: no QUIT to a server that may never answer.
                client.close()
            else:
                try:
                    await client.quit(timeout=10)
                except Exception:
                    client.close()

    async def _send(
        self, client: aiosmtplib.SMTP, hop: Hop, envelope: Envelope, message: _Message, targets: Sequence[Target]
    ) -> list[RecipientOutcome]:
        addresses = [envelope.mail_from, *(t.address for t in targets)]
        utf8 = not all(a.isascii() for a in addresses)
        if utf8 and not client.supports_extension("smtputf8"):
            # RFC 6531 §3.4: a UTF-8 address cannot be sent to a server without SMTPUTF8. Only a domain has an ASCII
            # form (its A-labels, RFC 5890); a UTF-8 local part has none, and then the message cannot go this way.
            wire = [ascii_address(a) for a in addresses]
            if any(a is None for a in wire):
                text = f"{hop.host} does not support SMTPUTF8, needed for this message"
                return [_from(outcome.permanent(t.address, "5.6.7", text, TRANSPORT, hop.host), t) for t in targets]
            addresses = [str(a) for a in wire]
            utf8 = False
        params = {p.upper() for p in envelope.esmtp}
        options = []
        if client.supports_extension("size"):
            options.append(f"SIZE={len(message.prefix) + len(message.body)}")
        if client.supports_extension("8bitmime") and (not message.body.isascii() or "BODY=8BITMIME" in params):
            options.append("BODY=8BITMIME")
        if client.supports_extension("smtputf8") and (utf8 or "SMTPUTF8" in params):
            options.append("SMTPUTF8")
        dsn = client.supports_extension("dsn")
        if dsn:
            options += mail_parameters(envelope)
        encoding = "utf-8" if utf8 else "ascii"
        try:
            await client.mail(addresses[0], options=options, encoding=encoding)
        except aiosmtplib.SMTPSenderRefused as exc:
            if _permanent(exc.code):
                return [self._refused(t, hop, exc.code, exc.message) for t in targets]
            raise
        results: list[RecipientOutcome] = []
        accepted: list[Target] = []
        for target, address in zip(targets, addresses[1:], strict=True):
            try:
                rcpt_options = rcpt_parameters(envelope, target.original) if dsn else []
                await client.rcpt(address, options=rcpt_options, encoding=encoding)
                accepted.append(target)
            except aiosmtplib.SMTPRecipientRefused as exc:
                results.append(self._refused(target, hop, exc.code, exc.message))
        if not accepted:
            return results
        try:
            # Every line end CRLF, lines starting with "." dot-stuffed (RFC 5321 §4.5.2), sent in chunks.
            # RFC 5321 §4.5.3.2.6: up to 10 minutes for the reply to the final dot.
            s = self.settings
            response = await send_data(
                client, message.body, s.relay_command_timeout, s.relay_data_timeout, message.prefix
            )
        except aiosmtplib.SMTPDataError as exc:
            return results + [self._refused(t, hop, exc.code, exc.message) for t in accepted]
        except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPTimeoutError, OSError) as exc:
            # The message may or may not have arrived; retrying risks a duplicate, never a loss (RFC 5321 §6.1).
            text = f"{hop.host}[{hop.address}]: lost connection during DATA: {type(exc).__name__}"
            return results + [
                _from(outcome.temporary(t.address, "4.4.2", text, TRANSPORT, hop.host), t) for t in accepted
            ]
        text = reply(response.code, response.message)
        relayed = [_from(outcome.delivered(t.address, text, TRANSPORT, hop.host), t) for t in accepted]
        return results + [replace(found, dsn_passed=dsn) for found in relayed]

    def _refused(self, target: Target, hop: Hop, code: int, message: str) -> RecipientOutcome:
        text = reply(code, message)
        if not 400 <= code <= 599:
            # RFC 5321 §4.2.1: only 4yz and 5yz refuse; anything else here (999, 1yz, 252 to DATA) is a server out
            # of step with the protocol. Not a verdict on the recipient: try again later (RFC 3463 X.5.0).
            said = f"{hop.host} said: {text} (not an SMTP refusal)"
            return _from(outcome.temporary(target.address, "4.5.0", said, TRANSPORT, hop.host), target)
        enhanced = _enhanced(code, readable(message))
        make = outcome.permanent if _permanent(code) else outcome.temporary
        return _from(make(target.address, enhanced, text, TRANSPORT, hop.host), target)


def _ssl_cause(exc: BaseException) -> ssl.SSLError | None:
    """The TLS error behind `exc` (aiosmtplib wraps a failed implicit-TLS handshake in SMTPConnectError)."""
    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None:
            return None
        if isinstance(seen, ssl.SSLError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _unverified(hop: Hop, exc: BaseException) -> TemporaryError:
    """A hop that must have verified TLS did not get it. A failed handshake or certificate check is 4.7.5,
    "cryptographic failure" (RFC 3463), as Postfix reports an unverified server certificate; a STARTTLS the server
    refuses is 4.7.4, "security features not supported". Temporary both: a renewed certificate, a fixed CA bundle or
    the server's TLS back in service cures it, and the message waits for that in the delay queues."""
    cause = _ssl_cause(exc)
    if isinstance(cause, ssl.SSLCertVerificationError):
        detail, enhanced = f"certificate not verified for {hop.tls.server_name}: {cause.verify_message}", "4.7.5"
    elif cause is not None:
        detail, enhanced = f"TLS handshake failed: {cause}", "4.7.5"
    else:
        detail, enhanced = f"STARTTLS failed: {exc}", "4.7.4"
    return TemporaryError(f"{hop.host}[{hop.address}]: {detail}; {_withheld(hop)}", enhanced=enhanced)


def _result_type(exc: BaseException) -> str:
    """The RFC 8460 §4.3 result type of a failed TLS negotiation, for TLS-RPT."""
    cause = _ssl_cause(exc)
    if isinstance(cause, ssl.SSLCertVerificationError):
        message = (cause.verify_message or "").lower()
        if "hostname mismatch" in message:
            return "certificate-host-mismatch"
        if "expired" in message:
            return "certificate-expired"
        return "certificate-not-trusted"
    return "validation-failure" if cause is not None else "starttls-not-supported"


def _withheld(hop: Hop) -> str:
    """What a hop without the TLS it must have does not get."""
    return "relay credentials not sent" if hop.relay else f"nothing sent ({hop.tls.policy} policy)"


def _check_tlsa(client: aiosmtplib.SMTP, hop: Hop) -> None:
    """DANE: the certificate the server showed must match one of its usable TLSA records (RFC 7672 §3)."""
    assert hop.tls.dane is not None
    transport = client.transport
    ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
    certificate = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
    if not certificate or not hop.tls.dane.matches(certificate):
        text = f"{hop.host}[{hop.address}]: certificate does not match its TLSA records; {_withheld(hop)}"
        raise _TLSRefused(TemporaryError(text, enhanced="4.7.5"), "tlsa-invalid")


async def _connect(address: str, port: int, timeout: float) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        await asyncio.wait_for(asyncio.get_running_loop().sock_connect(sock, (address, port)), timeout)
    except BaseException:
        sock.close()
        raise
    return sock


def _literal_route(domain: str) -> Route | None:
    """`user@[192.0.2.1]` (RFC 5321 §4.1.3 address literal): deliver to that address, no DNS."""
    if domain.startswith("[") and domain.endswith("]"):
        literal = domain[1:-1].removeprefix("IPv6:").removeprefix("ipv6:")
        if is_ip_literal(literal):
            return Route(literal, SMTP_PORT, mx=False)
    return None


def _permanent(code: int) -> bool:
    """A 5yz reply (RFC 5321 §4.2.1); codes above 599 are not SMTP replies at all."""
    return 500 <= code <= 599


def _enhanced(code: int, message: str) -> str:
    """The RFC 3463 code in the reply when it carries one of the right class, else a generic one."""
    first = message.split(maxsplit=1)[0] if message.split() else ""
    parts = first.split(".")
    if len(parts) == 3 and all(p.isdigit() for p in parts) and first[0] == str(code)[0]:
        return first
    return f"{str(code)[0]}.0.0"


def _from(found: RecipientOutcome, target: Target) -> RecipientOutcome:
    return replace(found, original=target.original)
