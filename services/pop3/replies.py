"""Every POP3 reply the server sends, as named constants or small builders; tests assert against the same names."""

from __future__ import annotations

from services.pop3.response import Action, Reply


# -- greeting and session ----------------------------------------------------------------------------------------
def greeting(hostname: str) -> Reply:
    # No APOP timestamp in the banner: APOP is off (it needs plaintext-equivalent stored secrets; see docs).
    return Reply(True, f"{hostname} Postroom POP3 server ready")


OK_NOOP = Reply(True, "")
OK_UTF8 = Reply(True, "UTF8 enabled")
OK_CAPA = Reply(True, "Capability list follows")
OK_AUTH_MECHANISMS = Reply(True, "Supported SASL mechanisms follow")
OK_STLS = Reply(True, "Begin TLS negotiation", Action.START_TLS)
OK_SIGNOFF = Reply(True, "Postroom POP3 server signing off", Action.CLOSE)

ERR_LINE_TOO_LONG = Reply(False, "Line too long")
ERR_WRONG_STATE = Reply(False, "Command not valid in this state")
ERR_TOO_MANY_BAD_COMMANDS = Reply(False, "Too many bad commands; closing the connection", Action.CLOSE)
ERR_TOO_MANY_CONNECTIONS = Reply(False, "[SYS/TEMP] Too many connections; try again later", Action.CLOSE)
ERR_TEMPORARY = Reply(False, "[SYS/TEMP] Temporary server failure, try again later")


def err_syntax(text: str) -> Reply:
    return Reply(False, text)


# -- authorization (RFC 1939 §7, RFC 5034, RFC 2449 §8 response codes, RFC 3206 [SYS/*] and [AUTH]) -------------
OK_USER = Reply(True, "Send your password")
ERR_NEED_USER = Reply(False, "Send USER first")
ERR_AUTH_FAILED = Reply(False, "[AUTH] Authentication failed")
ERR_AUTH_CANCELLED = Reply(False, "Authentication cancelled")
ERR_AUTH_BAD_BASE64 = Reply(False, "[AUTH] Invalid base64 in SASL response")
ERR_AUTH_MECHANISM = Reply(False, "Unsupported SASL mechanism")
ERR_TOO_MANY_AUTH_FAILURES = Reply(False, "[AUTH] Too many authentication failures", Action.CLOSE)
ERR_PLAINTEXT_DISALLOWED = Reply(
    False, "[AUTH] Plaintext authentication disallowed on non-secure connections; use STLS or port 995"
)
ERR_IN_USE = Reply(False, "[IN-USE] Maildrop is locked by another session")
ERR_APOP_DISABLED = Reply(False, "APOP is not supported; use USER/PASS or AUTH over TLS")
ERR_ALREADY_TLS = Reply(False, "Already using TLS")
ERR_STLS_UNAVAILABLE = Reply(False, "STLS is not available")


def ok_maildrop(count: int, size: int) -> Reply:
    return Reply(True, f"Maildrop has {count} message{'s' if count != 1 else ''} ({size} octets)")


# -- transaction -------------------------------------------------------------------------------------------------
ERR_NO_SUCH_MESSAGE = Reply(False, "No such message")
ERR_ALREADY_DELETED = Reply(False, "Message already deleted")
ERR_MESSAGE_GONE = Reply(False, "[SYS/TEMP] Message is no longer available")


def ok_stat(count: int, size: int) -> Reply:
    return Reply(True, f"{count} {size}")


def ok_list_all(count: int, size: int) -> Reply:
    return Reply(True, f"{count} message{'s' if count != 1 else ''} ({size} octets)")


def ok_list_one(msg: int, size: int) -> Reply:
    return Reply(True, f"{msg} {size}")


OK_UIDL_ALL = Reply(True, "Unique-ID listing follows")


def ok_uidl_one(msg: int, uid: str) -> Reply:
    return Reply(True, f"{msg} {uid}")


def ok_retr(size: int) -> Reply:
    return Reply(True, f"{size} octets")


OK_TOP = Reply(True, "Top of message follows")


def ok_dele(msg: int) -> Reply:
    return Reply(True, f"Message {msg} deleted")


# -- update (RFC 1939 §6) ----------------------------------------------------------------------------------------
def ok_update(left: int) -> Reply:
    detail = "maildrop empty" if left == 0 else f"{left} message{'s' if left != 1 else ''} left"
    return Reply(True, f"Postroom POP3 server signing off ({detail})", Action.CLOSE)


ERR_LOCK_LOST = Reply(False, "[SYS/TEMP] Maildrop lock lost; no messages were deleted", Action.CLOSE)
ERR_UPDATE_FAILED = Reply(False, "[SYS/TEMP] Could not remove deleted messages; none were removed", Action.CLOSE)
