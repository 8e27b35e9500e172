"""The Redis schema: every key name Postroom uses is built here and nowhere else.

The namespace (POSTROOM_NAMESPACE, `[A-Za-z0-9_.-]`) never holds a brace, so only the tags below decide slots.

Global keys (one slot each, only ever touched by single-key commands, so what their members or fields hold, e.g.
an alias source with a brace, never matters for slots):
    {ns}:domains                      set of local domains
    {ns}:users                        set of account addresses
    {ns}:aliases                      hash: source address (or "@domain" catch-all) -> JSON list of targets
    {ns}:stats:trace-events           counter: trace events ever written (the store's metric reads it)
    {ns}:dkim:{domain}                hash: DKIM selector -> JSON {algorithm, created, public_key, private_key}
                                      (dkim.py; HSETNX, HDEL, DEL with the domain)

Login throttle (throttle.py), counters expiring `throttle.WINDOW` after their last failure; single-key commands only
(so a brace in an account moves its one key to another slot, harmlessly):
    {ns}:throttle:account:{account}   failed logins of one account (its normalised address, or a digest of a login
                                      that is no address)
    {ns}:throttle:ip:{client}         failed logins from one IPv4 address or IPv6 /64

Rate limits (ratelimit.py, the RATE_LIMIT script; each key holds a GCRA "theoretical arrival time" in ms and
expires when it no longer restricts anything):
    {ns}:ratelimit:mx:{client}        port 25 connections from one IPv4 address or IPv6 /64 (one key per script call)

Per message trace, hash-tagged by queue id (single-key commands only; pipelined, never in a script; a queue id is
our own `[0-9A-Z]{26}`, and even a foreign one with a brace would only move its one key to another slot):
    {ns}:trace:{queue_id}             list of JSON events, capped at trace.MAX_EVENTS, expiring after the retention

Per message delivery progress, hash-tagged by queue id like the trace (one key per script call: RECORD_PROGRESS):
    {ns}:progress:{queue_id}          hash: final recipient -> durable outcome (stored, duplicate, relayed, bounced,
                                      deferred:N); no TTL while a redelivery may still come, then the dedup TTL

Outbound TLS policies (tls_policy.py), single-key commands only:
    {ns}:mta-sts:{domain}             string: the domain's MTA-STS policy as last fetched (JSON), expiring with its
                                      max_age (RFC 8461 §3.2)
    {ns}:tlsrpt:{day}                 set: the policy domains with TLS-RPT counters on that UTC day (RFC 8460)
    {ns}:tlsrpt:{day}:{domain}        hash: sessions of that day by `<policy>:success` or `<policy>:<result type>`;
                                      expires after TLSRPT_KEEP
    {ns}:tlsrpt:{day}:sent            string: the replica that sends that day's reports (SET NX)

Built-in ACME (certificates.py, acme.py), global keys touched by single-key commands only:
    {ns}:acme:certificate             hash: chain (PEM, the server's first), key (PEM), domains (comma list),
                                      not_after (Unix time), version (SHA-256 of chain and key: what listeners watch)
    {ns}:acme:account                 hash: directory (URL), key (the account's JWK, JSON), uri (its account URL)
    {ns}:acme:challenge:{token}       string: the HTTP-01 key authorization for `token`, expiring after the order
    {ns}:acme:lock                    string with a TTL: the store replica ordering now, value = owner token

The queue index (queue_index.py): one entry per message not yet finished, hash-tagged by queue id like its progress
record, so one script (queue_lua.QUEUE_RECORD) writes both; the listing set is a global key changed by single
commands only (added to before an entry is written, removed from after it is deleted, so a crash leaves at most a
member without an entry, which a listing removes):
    {ns}:queue:{queue_id}             hash: the entry (state, sender, recipients left, attempts, last error, ...)
    {ns}:queue-ids                    zset: queue id -> arrival time

Per mailbox, all sharing one hash tag so every Lua script is Redis Cluster safe (docs/design.md invariant 9). The tag is
the normalised address, `{alice@example.com}`, unless the address holds a brace or no `@` (see `mailbox_tag`):
    {ns}:{addr}:account               hash: password (argon2id PHC string), quota (bytes, 0 = none), created,
                                      send_limit (absent or "": the default; else "messages,recipients/period_ms")
    {ns}:{addr}:index                 zset: uid -> arrival sequence (POP3 message order)
    {ns}:{addr}:sizes                 hash: uid -> size in octets (CRLF, as RETR sends before dot-stuffing)
    {ns}:{addr}:usage                 hash: messages, bytes (kept in step with index and sizes by the scripts)
    {ns}:{addr}:seq                   counter giving arrival sequence numbers
    {ns}:{addr}:msg:{uid}             string: the message, CRLF line ends
    {ns}:{addr}:wire                  set: uids whose message is stored in wire form (no line starts with "."), so
                                      POP3 RETR sends it as stored; a uid not in it (e.g. stored before the set
                                      existed) is dot-stuffed and line-end checked on the way out
    {ns}:{addr}:dedup:{queue_id}      string with a TTL: "this queue message was stored here" (idempotent delivery)
    {ns}:{addr}:lock                  string with a TTL: POP3 maildrop lock, value = owner token
    {ns}:{addr}:sendlimit:messages    GCRA state of the account's send limit: messages (RATE_LIMIT, with the
    {ns}:{addr}:sendlimit:recipients  account hash's `send_limit` override) and recipients
    {ns}:{addr}:imported              hash: uid (the UIDL an imported message had) -> import time; no TTL, so
                                      re-running an import stores nothing twice, also what POP3 deleted since

Every multi-key change is a Lua script in lua.py over the keys of one mailbox only (one slot): STORE_MESSAGE,
IMPORT_MESSAGE,
DELETE_MESSAGES, CREATE_ACCOUNT, UPDATE_ACCOUNT, CLOSE_MAILBOX, ACQUIRE_LOCK, REFRESH_LOCK, RELEASE_LOCK
(RECORD_PROGRESS and the QUEUE_* scripts run over the keys of one message instead; RATE_LIMIT runs over one
mailbox's keys or over one `ratelimit:mx` key).
A user's removal (accounts.remove_user) runs CLOSE_MAILBOX, then deletes the mailbox keys, then leaves `users`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from services.store.idn import normalize_domain


def normalize_address(address: str) -> str:
    """Mailbox identity: the address lower-cased (local parts are case-insensitive here, as in most MTAs), without
    the trailing dots of a fully qualified domain, which validate_address drops too: `carol@example.test.` is the
    account `carol@example.test` everywhere, not a password check of one and a mailbox lock of another. The domain
    is spelt as `idn.normalize_domain` spells it: `info@xn--bcher-kva.test` is the mailbox `info@bücher.test`."""
    address = address.strip().lower().rstrip(".")
    if address.isascii() and "xn--" not in address:
        return address  # the usual case, checked on the whole text (cheaper than splitting it first)
    local, at, domain = address.rpartition("@")
    if not at or (domain.isascii() and "xn--" not in domain):
        return address
    return f"{local}@{normalize_domain(domain)}"


def mailbox_tag(address: str) -> str:
    """The hash tag of a mailbox's keys (without its braces): one Redis Cluster slot, one mailbox.

    Redis hashes the text between the first `{` and the first `}` after it, if that is not empty (Cluster spec,
    "Hash tags"). `{` and `}` are atext (RFC 5322 §3.2.3), so a local part may hold them: `}ops@example.com` as
    `{}ops@example.com}` leaves an empty tag and spreads the mailbox over many slots. Such an address gets a digest
    instead, which holds neither brace nor `@`; a plain tag always holds an `@`, so the two kinds never meet and the
    mapping stays one-to-one. Every address with an `@` and no brace keeps the tag it always had (no migration).
    """
    address = normalize_address(address)
    if "@" in address and "{" not in address and "}" not in address:
        return address
    # surrogatepass: text that came through surrogateescape still maps to some tag instead of raising here.
    return "#" + hashlib.sha256(address.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True)
class Keys:
    """Key names for one namespace."""

    namespace: str

    @property
    def domains(self) -> str:
        return f"{self.namespace}:domains"

    @property
    def users(self) -> str:
        return f"{self.namespace}:users"

    @property
    def aliases(self) -> str:
        return f"{self.namespace}:aliases"

    @property
    def trace_events(self) -> str:
        return f"{self.namespace}:stats:trace-events"

    def dkim(self, domain: str) -> str:
        return f"{self.namespace}:dkim:{domain}"

    def throttle_account(self, account: str) -> str:
        return f"{self.namespace}:throttle:account:{account}"

    def throttle_client(self, client: str) -> str:
        return f"{self.namespace}:throttle:ip:{client}"

    def rate_limit_mx(self, client: str) -> str:
        return f"{self.namespace}:ratelimit:mx:{client}"

    def trace(self, queue_id: str) -> str:
        return f"{self.namespace}:trace:{{{queue_id}}}"

    def progress(self, queue_id: str) -> str:
        return f"{self.namespace}:progress:{{{queue_id}}}"

    def mta_sts(self, domain: str) -> str:
        return f"{self.namespace}:mta-sts:{domain}"

    def tlsrpt_day(self, day: str) -> str:
        return f"{self.namespace}:tlsrpt:{day}"

    def tlsrpt_sent(self, day: str) -> str:
        return f"{self.namespace}:tlsrpt:{day}:sent"

    def tlsrpt(self, day: str, domain: str) -> str:
        return f"{self.namespace}:tlsrpt:{day}:{domain}"

    @property
    def acme_certificate(self) -> str:
        return f"{self.namespace}:acme:certificate"

    @property
    def acme_account(self) -> str:
        return f"{self.namespace}:acme:account"

    def acme_challenge(self, token: str) -> str:
        return f"{self.namespace}:acme:challenge:{token}"

    @property
    def acme_lock(self) -> str:
        return f"{self.namespace}:acme:lock"

    def queue_entry(self, queue_id: str) -> str:
        return f"{self.namespace}:queue:{{{queue_id}}}"

    @property
    def queue_ids(self) -> str:
        return f"{self.namespace}:queue-ids"

    def mailbox(self, address: str) -> MailboxKeys:
        return MailboxKeys(f"{self.namespace}:{{{mailbox_tag(address)}}}")


@dataclass(frozen=True)
class MailboxKeys:
    """Key names of one mailbox; `prefix` already holds the hash tag."""

    prefix: str

    @property
    def account(self) -> str:
        return f"{self.prefix}:account"

    @property
    def index(self) -> str:
        return f"{self.prefix}:index"

    @property
    def sizes(self) -> str:
        return f"{self.prefix}:sizes"

    @property
    def wire(self) -> str:
        return f"{self.prefix}:wire"

    @property
    def usage(self) -> str:
        return f"{self.prefix}:usage"

    @property
    def seq(self) -> str:
        return f"{self.prefix}:seq"

    @property
    def lock(self) -> str:
        return f"{self.prefix}:lock"

    @property
    def send_messages(self) -> str:
        return f"{self.prefix}:sendlimit:messages"

    @property
    def send_recipients(self) -> str:
        return f"{self.prefix}:sendlimit:recipients"

    @property
    def imported(self) -> str:
        return f"{self.prefix}:imported"

    def message(self, uid: str) -> str:
        return f"{self.prefix}:msg:{uid}"

    def dedup(self, queue_id: str) -> str:
        return f"{self.prefix}:dedup:{queue_id}"
