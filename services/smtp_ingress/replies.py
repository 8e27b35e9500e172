"""Every SMTP reply the ingress sends, as named constants with enhanced status codes (RFC 2034, RFC 3463)."""

from __future__ import annotations

import re

# -- greeting and session ---------------------------------------------------------------------------------------
IDENT = "ESMTP Postroom"
BYE = "221 2.0.0 Bye"
OK = "250 2.0.0 Ok"
HELP = "214 2.0.0 See RFC 5321"
VRFY_CANNOT = "252 2.5.2 Cannot VRFY user, but will accept message and attempt delivery"
EXPN_NOT_IMPLEMENTED = "502 5.5.1 EXPN not implemented"
TOO_MANY_CONNECTIONS = "421 4.7.0 Too many connections, try again later"
TOO_MANY_CONNECTIONS_FROM_IP = "421 4.7.0 Too many connections from your address, try again later"
SHUTTING_DOWN = "421 4.3.2 Service shutting down, try again later"
TOO_MANY_ERRORS = "421 4.7.0 Too many errors, closing connection"
TIMEOUT = "421 4.4.2 Timeout, closing connection"
SESSION_TOO_LONG = "421 4.4.2 Session too long, closing connection"

# -- HELO/EHLO (RFC 2034 §3: no enhanced codes in replies to HELO and EHLO) ----------------------------------
HELO_SYNTAX = "501 Syntax: HELO hostname"
EHLO_SYNTAX = "501 Syntax: EHLO hostname"
HELO_BAD_NAME = "501 Invalid host name"
NEED_HELO = "503 5.5.1 Error: send HELO/EHLO first"

# -- syntax ----------------------------------------------------------------------------------------------------
BAD_SYNTAX = "500 5.5.2 Syntax error"
LINE_TOO_LONG = "500 5.5.2 Line too long"
UNRECOGNISED = "500 5.5.1 Command not recognized"
CONTROL_CHARACTERS = "501 5.5.2 Control characters are not allowed in commands"
BAD_SEQUENCE = "503 5.5.1 Bad sequence of commands"
NESTED_MAIL = "503 5.5.1 Error: nested MAIL command"
NEED_MAIL = "503 5.5.1 Error: need MAIL command"
NEED_RCPT = "503 5.5.1 Error: need RCPT command"
MAIL_SYNTAX = "501 5.5.4 Syntax: MAIL FROM:<address> [SP <mail-parameters>]"
RCPT_SYNTAX = "501 5.5.4 Syntax: RCPT TO:<address>"
PARAM_SYNTAX = "501 5.5.4 Syntax error in parameters or arguments"
PARAM_NOT_IMPLEMENTED = "555 5.5.4 Parameters not recognized or not implemented"
BAD_SENDER_SYNTAX = "501 5.1.7 Bad sender address syntax"
BAD_RECIPIENT_SYNTAX = "501 5.1.3 Bad recipient address syntax"
ADDRESS_TOO_LONG = "501 5.5.4 Address too long (RFC 5321 section 4.5.3.1)"
NON_ASCII_WITHOUT_SMTPUTF8 = "553 5.6.7 Non-ASCII address requires SMTPUTF8"
QUOTED_LOCAL_PART = "553 5.1.3 Quoted local parts holding '@' are not accepted"

# -- MAIL / RCPT policy ----------------------------------------------------------------------------------------
SENDER_OK = "250 2.1.0 Ok"
RECIPIENT_OK = "250 2.1.5 Ok"
SENDER_NOT_OWNED = "553 5.7.1 Sender address not owned by the authenticated user"
NO_SUCH_USER = "550 5.1.1 No such user here"
RELAY_DENIED = "554 5.7.1 Relay access denied"
TOO_MANY_RECIPIENTS = "452 4.5.3 Too many recipients"
MESSAGE_TOO_BIG_DECLARED = "552 5.3.4 Message size exceeds fixed maximum message size"
AUTH_REQUIRED = "530 5.7.0 Authentication required"
STARTTLS_REQUIRED = "530 5.7.0 Must issue a STARTTLS command first"

# -- DATA ------------------------------------------------------------------------------------------------------
START_DATA = "354 End data with <CR><LF>.<CR><LF>"
MESSAGE_TOO_BIG = "552 5.3.4 Message too big for system"
DATA_LINE_TOO_LONG = "500 5.6.0 Message has a line longer than 998 octets (RFC 5322 section 2.1.1)"
TEMPORARY_FAILURE = "451 4.3.0 Temporary failure, please try again later"
QUEUED = "250 2.0.0 Ok: queued as {queue_id}"

# -- STARTTLS and AUTH -----------------------------------------------------------------------------------------
READY_FOR_TLS = "220 2.0.0 Ready to start TLS"
TLS_NOT_AVAILABLE = "454 4.7.0 TLS not available"
STARTTLS_SYNTAX = "501 5.5.4 Syntax: STARTTLS"
AUTH_OK = "235 2.7.0 Authentication successful"
AUTH_INVALID = "535 5.7.8 Authentication credentials invalid"
AUTH_NEEDS_TLS = "538 5.7.11 Encryption required for requested authentication mechanism"
AUTH_ALREADY = "503 5.5.1 Already authenticated"
AUTH_SYNTAX = "501 5.5.4 Syntax: AUTH mechanism [initial-response]"
AUTH_UNKNOWN_MECHANISM = "504 5.5.4 Unrecognized authentication type"
AUTH_ABORTED = "501 5.7.0 Authentication aborted"
AUTH_BAD_BASE64 = "501 5.5.2 Cannot decode base64"
AUTH_BAD_RESPONSE = "501 5.5.2 Malformed authentication response"
AUTH_NOT_OFFERED = "503 5.5.1 AUTH not available before EHLO"


def queued(queue_id: str) -> str:
    return QUEUED.format(queue_id=queue_id)


# aiosmtpd answers some protocol errors itself, with texts that lack an enhanced code or echo client input;
# `translate` maps those to our constants, so every reply on the wire comes from this module.
# aiosmtpd's own reply texts (1.4.6) -> ours. Matched on the start of the text; the first match wins.
_BUILTIN: tuple[tuple[str, str], ...] = (
    ("500 Error: bad syntax", BAD_SYNTAX),
    ("500 Error: strict ASCII mode", BAD_SYNTAX),
    ("500 Command line too long", LINE_TOO_LONG),
    ("500 Line too long", DATA_LINE_TOO_LONG),
    ("500 Error: command 'AUTH' not recognized", AUTH_NOT_OFFERED),
    ("500 Error: command ", UNRECOGNISED),
    ("500 Error: (", TEMPORARY_FAILURE),
    ("500 Error: Cannot describe error", TEMPORARY_FAILURE),
    ("502 5.5.1 Too many unrecognized commands", TOO_MANY_ERRORS),
    ("502 EXPN not implemented", EXPN_NOT_IMPLEMENTED),
    ("502 Could not VRFY", VRFY_CANNOT),
    ("530 Must issue a STARTTLS command first", STARTTLS_REQUIRED),
    ("554 Command refused due to lack of security", STARTTLS_REQUIRED),
    ("503 Error: send HELO first", NEED_HELO),
    ("503 Error: send EHLO first", NEED_HELO),
    ("503 Error: nested MAIL command", NESTED_MAIL),
    ("503 Error: need MAIL command", NEED_MAIL),
    ("503 Error: need RCPT command", NEED_RCPT),
    ("503 Already authenticated", AUTH_ALREADY),
    ("501 Syntax: MAIL", MAIL_SYNTAX),
    ("501 Syntax: RCPT", RCPT_SYNTAX),
    ("501 Syntax: STARTTLS", STARTTLS_SYNTAX),
    ("501 Syntax: VRFY", PARAM_SYNTAX),
    ("501 Syntax: QUIT", PARAM_SYNTAX),
    ("501 Syntax: RSET", PARAM_SYNTAX),
    ("501 Syntax: DATA", PARAM_SYNTAX),
    ("501 Error: BODY", PARAM_SYNTAX),
    ("501 Error: SMTPUTF8", PARAM_SYNTAX),
    ("501 Not enough value", AUTH_SYNTAX),
    ("501 Too many values", AUTH_SYNTAX),
    ("501 5.7.0 Auth aborted", AUTH_ABORTED),
    ("501 5.5.2 Can't decode base64", AUTH_BAD_BASE64),
    ("501 5.5.2 Can't split auth value", AUTH_BAD_RESPONSE),
    ("552 Error: message size exceeds", MESSAGE_TOO_BIG_DECLARED),
    ("552 Error: Too much mail data", MESSAGE_TOO_BIG),
    ("555 MAIL FROM parameters", PARAM_NOT_IMPLEMENTED),
    ("555 RCPT TO parameters", PARAM_NOT_IMPLEMENTED),
    ("454 TLS not available", TLS_NOT_AVAILABLE),
    ("220 Ready to start TLS", READY_FOR_TLS),
    ("221 Bye", BYE),
    ("250 OK", OK),
    ("250 Syntax:", HELP),
    ("250 Supported commands", HELP),
    ("501 Supported commands", HELP),
)
_ENHANCED = re.compile(r"^[245]\d\d[ -][245]\.\d{1,3}\.\d{1,3}( |$)")


def translate(text: str, stage: str) -> str:
    """Our reply for a text aiosmtpd produced; the greeting, replies to HELO/EHLO (RFC 2034 §3) and 3xx
    continuations pass unchanged."""
    # Most replies are our own constants or a queue id, which translate to themselves in every stage: a set
    # lookup instead of some 45 prefix comparisons per reply.
    if text in _OWN or text.startswith(_QUEUED_PREFIX):
        return text
    return _translate(text, stage)


def _translate(text: str, stage: str) -> str:
    if stage in ("connect", "helo") or text[:1] == "3":
        return text
    if text.startswith("553 5.1.3 Error: malformed address"):
        return BAD_SENDER_SYNTAX if stage == "mail" else BAD_RECIPIENT_SYNTAX
    for prefix, reply in _BUILTIN:
        if text.startswith(prefix):
            return reply
    if _ENHANCED.match(text):
        return text
    # A reply we did not foresee still gets an enhanced code of its class (RFC 3463 §3.1: x.0.0).
    code = text[:3]
    return f"{code} {code[0]}.0.0 {text[4:]}" if code.isdigit() and code[0] in "245" else text


def code_of(text: str) -> int:
    return int(text[:3]) if text[:3].isdigit() else 0


def _own_constants() -> frozenset[str]:
    """Every reply constant of this module that `_translate` leaves as it is, whatever the stage."""
    texts = (value for name, value in globals().items() if name.isupper() and isinstance(value, str))
    return frozenset(text for text in texts if code_of(text) and _translate(text, "other") == text)


# A queue id is [0-9A-Za-z]; "250 2.0.0 " already carries an enhanced code and no aiosmtpd text starts so.
_QUEUED_PREFIX = QUEUED.partition("{")[0]
_OWN = _own_constants()
