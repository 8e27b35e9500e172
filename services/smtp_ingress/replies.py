"""Every SMTP reply the ingress sends, as `Reply` values with enhanced status codes (RFC 2034, RFC 3463).

Handlers and session code return these values; `IngressSMTP.push` is the one place that writes them. Tests assert
against the same constants (`str(reply)` is the reply as a client reads it).

aiosmtpd still answers some commands itself (its command loop, and the checks of the verbs we do not override).
Its texts reach `push` as strings and are mapped here by exact text, in `AIOSMTPD_TEXTS`, to our values; the rule
for each of aiosmtpd's texts is:

- a fixed text goes in `AIOSMTPD_TEXTS` (one dictionary lookup, no pattern);
- a text that depends on the command it answers goes in `AIOSMTPD_TEXTS_BY_COMMAND` (only "malformed address",
  which is the sender's problem after MAIL and the recipient's after RCPT);
- a text that echoes client input or varies per session (the unknown verb, VRFY's argument, HELP's lists, the
  AUTH challenges) is never produced: the session or the handler answers at the seam before aiosmtpd would
  (`_CommandTable` for unknown verbs, `smtp_VRFY`, `smtp_HELP`, `IngressSMTP.challenge`), except the greeting,
  which is mapped per listener (`greeting`).

tests/smtp_ingress/test_aiosmtpd_texts.py reads aiosmtpd's source and fails when a text appears that none of
these rules covers, so that an upgrade of aiosmtpd cannot put one of its own texts on the wire unnoticed.
"""

from __future__ import annotations

from base64 import b64encode
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Reply:
    """One SMTP reply: its code, enhanced status code ("" where RFC 2034 exempts it), text (lines separated by
    newlines for a multi-line reply), and whether the session ends once it is written (every 421, and 221)."""

    code: int
    enhanced: str
    text: str
    close: bool = False
    # The wire form, made once per value: constants are written thousands of times a second.
    _line: str = field(init=False, repr=False, compare=False)
    _wire: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        prefix = f"{self.enhanced} " if self.enhanced else ""
        *first, last = self.text.split("\n")
        # RFC 5321 §4.2.1: every line but the last has a hyphen after the code; RFC 2034 §3: each one the code.
        lines = [f"{self.code}-{prefix}{text}" for text in first]
        lines.append(f"{self.code} {prefix}{last}")
        line = "\n".join(lines)
        object.__setattr__(self, "_line", line)
        object.__setattr__(self, "_wire", line.replace("\n", "\r\n").encode() + b"\r\n")

    def encode(self) -> bytes:
        """The bytes on the wire, CRLF included."""
        return self._wire

    def __str__(self) -> str:
        """The reply as a client reads it: its lines joined by newlines, without the final CRLF."""
        return self._line


# -- greeting and session ---------------------------------------------------------------------------------------
IDENT = "ESMTP Postroom"
BYE = Reply(221, "2.0.0", "Bye", close=True)
OK = Reply(250, "2.0.0", "Ok")
HELP = Reply(214, "2.0.0", "See RFC 5321")
VRFY_CANNOT = Reply(252, "2.5.2", "Cannot VRFY user, but will accept message and attempt delivery")
EXPN_NOT_IMPLEMENTED = Reply(502, "5.5.1", "EXPN not implemented")
TOO_MANY_CONNECTIONS = Reply(421, "4.7.0", "Too many connections, try again later", close=True)
TOO_MANY_CONNECTIONS_FROM_IP = Reply(421, "4.7.0", "Too many connections from your address, try again later", True)
SHUTTING_DOWN = Reply(421, "4.3.2", "Service shutting down, try again later", close=True)
TOO_MANY_ERRORS = Reply(421, "4.7.0", "Too many errors, closing connection", close=True)
TIMEOUT = Reply(421, "4.4.2", "Timeout, closing connection", close=True)
SESSION_TOO_LONG = Reply(421, "4.4.2", "Session too long, closing connection", close=True)


def greeting(hostname: str) -> Reply:
    """RFC 5321 §4.3.1's 220 (no enhanced code: it comes before EHLO could announce them)."""
    return Reply(220, "", f"{hostname} {IDENT}")


# -- HELO/EHLO (RFC 2034 §3: no enhanced codes in replies to HELO and EHLO) ----------------------------------
HELO_SYNTAX = Reply(501, "", "Syntax: HELO hostname")
EHLO_SYNTAX = Reply(501, "", "Syntax: EHLO hostname")
HELO_BAD_NAME = Reply(501, "", "Invalid host name")
NEED_HELO = Reply(503, "5.5.1", "Error: send HELO/EHLO first")


def helo(hostname: str) -> Reply:
    return Reply(250, "", hostname)


def ehlo(hostname: str, keywords: list[str]) -> Reply:
    """RFC 5321 §4.1.1.1: our name, then one EHLO keyword (with its parameters) per line."""
    return Reply(250, "", "\n".join([hostname, *keywords]))


# -- syntax ----------------------------------------------------------------------------------------------------
BAD_SYNTAX = Reply(500, "5.5.2", "Syntax error")
LINE_TOO_LONG = Reply(500, "5.5.2", "Line too long")
UNRECOGNISED = Reply(500, "5.5.1", "Command not recognized")
CONTROL_CHARACTERS = Reply(501, "5.5.2", "Control characters are not allowed in commands")
BAD_SEQUENCE = Reply(503, "5.5.1", "Bad sequence of commands")
NESTED_MAIL = Reply(503, "5.5.1", "Error: nested MAIL command")
NEED_MAIL = Reply(503, "5.5.1", "Error: need MAIL command")
NEED_RCPT = Reply(503, "5.5.1", "Error: need RCPT command")
MAIL_SYNTAX = Reply(501, "5.5.4", "Syntax: MAIL FROM:<address> [SP <mail-parameters>]")
RCPT_SYNTAX = Reply(501, "5.5.4", "Syntax: RCPT TO:<address>")
PARAM_SYNTAX = Reply(501, "5.5.4", "Syntax error in parameters or arguments")
PARAM_NOT_IMPLEMENTED = Reply(555, "5.5.4", "Parameters not recognized or not implemented")
BAD_SENDER_SYNTAX = Reply(501, "5.1.7", "Bad sender address syntax")
BAD_RECIPIENT_SYNTAX = Reply(501, "5.1.3", "Bad recipient address syntax")
ADDRESS_TOO_LONG = Reply(501, "5.5.4", "Address too long (RFC 5321 section 4.5.3.1)")
NON_ASCII_WITHOUT_SMTPUTF8 = Reply(553, "5.6.7", "Non-ASCII address requires SMTPUTF8")
QUOTED_LOCAL_PART = Reply(553, "5.1.3", "Quoted local parts holding '@' are not accepted")

# -- MAIL / RCPT policy ----------------------------------------------------------------------------------------
SENDER_OK = Reply(250, "2.1.0", "Ok")
RECIPIENT_OK = Reply(250, "2.1.5", "Ok")
SENDER_NOT_OWNED = Reply(553, "5.7.1", "Sender address not owned by the authenticated user")
NO_SUCH_USER = Reply(550, "5.1.1", "No such user here")
RELAY_DENIED = Reply(554, "5.7.1", "Relay access denied")
TOO_MANY_RECIPIENTS = Reply(452, "4.5.3", "Too many recipients")
MESSAGE_TOO_BIG_DECLARED = Reply(552, "5.3.4", "Message size exceeds fixed maximum message size")
AUTH_REQUIRED = Reply(530, "5.7.0", "Authentication required")
STARTTLS_REQUIRED = Reply(530, "5.7.0", "Must issue a STARTTLS command first")

# -- DATA ------------------------------------------------------------------------------------------------------
START_DATA = Reply(354, "", "End data with <CR><LF>.<CR><LF>")
MESSAGE_TOO_BIG = Reply(552, "5.3.4", "Message too big for system")
DATA_LINE_TOO_LONG = Reply(500, "5.6.0", "Message has a line longer than 998 octets (RFC 5322 section 2.1.1)")
TEMPORARY_FAILURE = Reply(451, "4.3.0", "Temporary failure, please try again later")
# What Postfix says when a table lookup fails: the store (Redis) could not answer for now.
LOOKUP_FAILURE = Reply(451, "4.3.0", "Temporary lookup failure, please try again later")
# RFC 7489 §6.7: the From domain says p=reject and the message is not aligned (POSTROOM_DMARC_ENFORCE).
DMARC_REJECTED = Reply(550, "5.7.1", "Message rejected by the DMARC policy of the From domain")
BDAT_SYNTAX = Reply(501, "5.5.4", "Syntax: BDAT chunk-size [LAST]")
DATA_AFTER_BDAT = Reply(503, "5.5.1", "Error: DATA and BDAT cannot be mixed in one transaction")


def chunk_received(size: int) -> Reply:
    """RFC 3030 §2: each BDAT chunk but the LAST is acknowledged on its own."""
    return Reply(250, "2.0.0", f"{size} octets received")


def queued(queue_id: str) -> Reply:
    return Reply(250, "2.0.0", f"Ok: queued as {queue_id}")


# -- limits, blocklists and the content filter ----------------------------------------------------------------
# RFC 3463 §3.8: X.7.1 "delivery not authorized, message refused"; temporary while a rate refills.
FILTER_REJECT = Reply(554, "5.7.1", "Message rejected as spam")
FILTER_TEMPFAIL = Reply(451, "4.7.1", "Message deferred by the content filter, try again later")
FILTER_UNAVAILABLE = Reply(451, "4.7.1", "Content filter unavailable, try again later")


def send_limit_exceeded(counter: str, rate: str) -> Reply:
    """An account over its send limit (`counter`: messages or recipients; `rate`: as `100/1h`)."""
    return Reply(451, "4.7.1", f"Send limit exceeded: {rate} {counter} for your account, try again later")


def send_limit_never(rate: str) -> Reply:
    """A message with more recipients than the account may send per period: waiting never helps."""
    return Reply(550, "5.7.1", f"Message has more recipients than your send limit allows ({rate} recipients)")


def connection_rate_exceeded(rate: str) -> Reply:
    return Reply(451, "4.7.1", f"Connection rate limit exceeded: {rate} connections from your address, try later")


def dnsbl_listed(client_ip: str, zone: str) -> Reply:
    return Reply(554, "5.7.1", f"Service unavailable; client host [{client_ip}] listed at {zone}")


# -- STARTTLS and AUTH -----------------------------------------------------------------------------------------
READY_FOR_TLS = Reply(220, "2.0.0", "Ready to start TLS")
TLS_NOT_AVAILABLE = Reply(454, "4.7.0", "TLS not available")
TLS_ALREADY_ACTIVE = Reply(503, "5.5.1", "TLS already active")
STARTTLS_SYNTAX = Reply(501, "5.5.4", "Syntax: STARTTLS")
AUTH_OK = Reply(235, "2.7.0", "Authentication successful")
AUTH_INVALID = Reply(535, "5.7.8", "Authentication credentials invalid")
AUTH_NEEDS_TLS = Reply(538, "5.7.11", "Encryption required for requested authentication mechanism")
AUTH_ALREADY = Reply(503, "5.5.1", "Already authenticated")
AUTH_SYNTAX = Reply(501, "5.5.4", "Syntax: AUTH mechanism [initial-response]")
AUTH_UNKNOWN_MECHANISM = Reply(504, "5.5.4", "Unrecognized authentication type")
AUTH_ABORTED = Reply(501, "5.7.0", "Authentication aborted")
AUTH_BAD_BASE64 = Reply(501, "5.5.2", "Cannot decode base64")
AUTH_BAD_RESPONSE = Reply(501, "5.5.2", "Malformed authentication response")
AUTH_NOT_OFFERED = Reply(503, "5.5.1", "AUTH not available before EHLO")
# RFC 4954 §4: "334" SP base64 prompt; the space stays when the prompt is empty.
CHALLENGE_EMPTY = Reply(334, "", b64encode(b"").decode())  # PLAIN without an initial response (RFC 4616)
CHALLENGE_USERNAME = Reply(334, "", b64encode(b"Username:").decode())  # LOGIN's prompts, as clients expect them
CHALLENGE_PASSWORD = Reply(334, "", b64encode(b"Password:").decode())


# -- aiosmtpd's own texts (1.4.6) ------------------------------------------------------------------------------
AIOSMTPD_TEXTS: dict[str, Reply] = {
    # its command loop, before a command reaches a verb
    "500 Error: bad syntax": BAD_SYNTAX,
    "500 Error: strict ASCII mode": BAD_SYNTAX,
    "500 Command line too long": LINE_TOO_LONG,
    "530 Must issue a STARTTLS command first": STARTTLS_REQUIRED,
    "554 Command refused due to lack of security": STARTTLS_REQUIRED,
    # its checks shared by verbs
    "503 Error: send HELO first": NEED_HELO,
    "503 Error: send EHLO first": NEED_HELO,
    "530 5.7.0 Authentication required": AUTH_REQUIRED,
    # its verbs, where they answer before or instead of our handler's hook
    "501 Syntax: HELO hostname": HELO_SYNTAX,
    "501 Syntax: EHLO hostname": EHLO_SYNTAX,
    "250 OK": OK,
    "221 Bye": BYE,
    "501 Syntax: QUIT": PARAM_SYNTAX,
    "501 Syntax: RSET": PARAM_SYNTAX,
    "501 Syntax: STARTTLS": STARTTLS_SYNTAX,
    "454 TLS not available": TLS_NOT_AVAILABLE,
    "220 Ready to start TLS": READY_FOR_TLS,
    "500 Error: command 'AUTH' not recognized": AUTH_NOT_OFFERED,
    "538 5.7.11 Encryption required for requested authentication mechanism": AUTH_NEEDS_TLS,
    "503 Already authenticated": AUTH_ALREADY,
    "501 Not enough value": AUTH_SYNTAX,
    "501 Too many values": AUTH_SYNTAX,
    "504 5.5.4 Unrecognized authentication type": AUTH_UNKNOWN_MECHANISM,
    "235 2.7.0 Authentication successful": AUTH_OK,
    "535 5.7.8 Authentication credentials invalid": AUTH_INVALID,
    "501 Syntax: MAIL FROM: <address>": MAIL_SYNTAX,
    "501 Syntax: MAIL FROM: <address> [SP <mail-parameters>]": MAIL_SYNTAX,
    "503 Error: nested MAIL command": NESTED_MAIL,
    "501 Error: BODY can only be one of 7BIT, 8BITMIME": PARAM_SYNTAX,
    "501 Error: SMTPUTF8 takes no arguments": PARAM_SYNTAX,
    "501 Error: SMTPUTF8 disabled": PARAM_SYNTAX,
    "552 Error: message size exceeds fixed maximum message size": MESSAGE_TOO_BIG_DECLARED,
    "555 MAIL FROM parameters not recognized or not implemented": PARAM_NOT_IMPLEMENTED,
    "503 Error: need MAIL command": NEED_MAIL,
    "501 Syntax: RCPT TO: <address>": RCPT_SYNTAX,
    "501 Syntax: RCPT TO: <address> [SP <mail-parameters>]": RCPT_SYNTAX,
    "555 RCPT TO parameters not recognized or not implemented": PARAM_NOT_IMPLEMENTED,
    "502 EXPN not implemented": EXPN_NOT_IMPLEMENTED,
}
AIOSMTPD_TEXTS_BY_COMMAND: dict[tuple[str, str], Reply] = {
    ("MAIL", "553 5.1.3 Error: malformed address"): BAD_SENDER_SYNTAX,
    ("RCPT", "553 5.1.3 Error: malformed address"): BAD_RECIPIENT_SYNTAX,
}


def from_aiosmtpd(text: str, command: str) -> Reply | None:
    """Our reply for a text of aiosmtpd's, answering `command`; None for a text the tables do not know."""
    return AIOSMTPD_TEXTS.get(text) or AIOSMTPD_TEXTS_BY_COMMAND.get((command, text))


def unforeseen(text: str) -> Reply:
    """A reply for a text no table knows (never reached with the aiosmtpd version the tables were made for): its
    code, and the enhanced code of its class (RFC 3463 §3.1, x.0.0) when it has none."""
    code, space, rest = text.partition(" ")
    if not (space and len(code) == 3 and code.isdigit() and code[0] in "2345"):
        return TEMPORARY_FAILURE
    enhanced, _, after = rest.partition(" ")
    parts = enhanced.split(".")
    if len(parts) == 3 and parts[0] == code[0] and all(part.isdigit() for part in parts):
        return Reply(int(code), enhanced, after)
    return Reply(int(code), f"{code[0]}.0.0", rest)
