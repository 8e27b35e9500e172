"""Prometheus metrics of the POP3 service; label values are bounded (command keywords, fixed result names)."""

from __future__ import annotations

from typing import Any

from prometheus_client import Counter, Gauge

from services.pop3.command import KNOWN_VERBS
from shared.proxy import DROP_REASONS
from shared.series import create_series

LISTENERS = ("pop3", "pop3s")
RESULTS = ("ok", "err")
MECHANISMS = ("user", "plain", "login")
CLOSE_REASONS = ("quit", "disconnect", "autologout", "bad_commands", "auth_failures", "error", "shutdown")

SESSIONS_ACTIVE = Gauge("postroom_pop3_sessions_active", "POP3 sessions currently open")
CONNECTIONS = Counter("postroom_pop3_connections_total", "POP3 connections accepted", ["listener"])
CONNECTIONS_REFUSED = Counter(
    "postroom_pop3_connections_refused_total", "POP3 connections refused by the global or per-IP cap"
)
PROXY_DROPPED = Counter(
    "postroom_pop3_proxy_dropped_total",
    "Connections closed before their session under the PROXY protocol: a peer outside "
    "POSTROOM_PROXY_TRUSTED_NETWORKS, the global cap, a missing or bad header, a failed TLS handshake.",
    ["reason"],
)
SESSIONS_CLOSED = Counter("postroom_pop3_sessions_closed_total", "POP3 sessions ended, by reason", ["reason"])
COMMANDS = Counter("postroom_pop3_commands_total", "POP3 commands answered", ["command", "result"])
STORE_ERRORS = Counter(
    "postroom_pop3_store_errors_total",
    "Commands answered [SYS/TEMP] because Redis was unreachable or refused (connection, timeout, readonly, ...).",
    ["reason"],
)
AUTH_FAILURES = Counter("postroom_pop3_auth_failures_total", "Failed POP3 logins", ["mechanism"])
LOCK_CONFLICTS = Counter("postroom_pop3_lock_conflicts_total", "Logins refused because the maildrop was locked")
MESSAGES_RETRIEVED = Counter("postroom_pop3_messages_retrieved_total", "Messages sent in full by RETR")
MESSAGES_DELETED = Counter("postroom_pop3_messages_deleted_total", "Messages removed in the UPDATE state")
SENT_BYTES = Counter("postroom_pop3_sent_bytes_total", "Bytes written to POP3 clients")
STLS_UPGRADES = Counter("postroom_pop3_stls_total", "Successful STLS upgrades")


_COMMAND_SERIES: dict[tuple[str, bool], Any] = {}


def count_command(verb: str, ok: bool) -> None:
    """COMMANDS.labels(verb, result).inc(), with the series looked up once (labels() is costly per command)."""
    series = _COMMAND_SERIES.get((verb, ok))
    if series is None:
        series = _COMMAND_SERIES[(verb, ok)] = COMMANDS.labels(verb, RESULTS[0] if ok else RESULTS[1])
    series.inc()


def initialise(_settings: object = None) -> None:
    """Create every labelled series at zero, so dashboards and alerts never see a missing series."""
    create_series(CONNECTIONS, LISTENERS)
    create_series(SESSIONS_CLOSED, CLOSE_REASONS)
    create_series(PROXY_DROPPED, DROP_REASONS)
    create_series(COMMANDS, (*sorted(KNOWN_VERBS), "UNKNOWN", "INVALID"), RESULTS)
    create_series(AUTH_FAILURES, MECHANISMS)
