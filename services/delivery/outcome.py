"""The outcome of delivering to one recipient: what the delivery layer hands to the consumer to act on."""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass


class Status(enum.Enum):
    DELIVERED = "delivered"
    TEMPORARY = "temporary"  # retry later (4xx)
    PERMANENT = "permanent"  # bounce (5xx)


@dataclass(frozen=True)
class RecipientOutcome:
    """One final recipient's result; `recipient` is what travels on in a retry (already alias-expanded)."""

    recipient: str
    status: Status
    enhanced: str  # RFC 3463 status code, e.g. "2.0.0", "4.2.2", "5.1.1"
    diagnostic: str  # the remote reply or our own reason, for the trace and the bounce's Diagnostic-Code
    transport: str = "local"  # "local" or "smtp"
    remote_mta: str = ""  # host name of the MTA that answered, for the bounce's Remote-MTA
    original: str = ""  # the envelope recipient it was expanded from, for the bounce's Original-Recipient
    # Relayed to a next hop that speaks DSN (RFC 3461 §4): the DSN parameters went with it, and with them the
    # duty of any success or failure notice from here on.
    dsn_passed: bool = False

    @property
    def permanent(self) -> bool:
        return self.status is Status.PERMANENT

    @property
    def status_class(self) -> str:
        return self.enhanced[:1]

    def carried(self) -> str:
        """The text a retry carries so the final bounce can still say what went wrong (Envelope.last_errors)."""
        return json.dumps(
            {
                "enhanced": self.enhanced,
                "diagnostic": self.diagnostic,
                "transport": self.transport,
                "remote_mta": self.remote_mta,
                "original": self.original,
            }
        )

    @staticmethod
    def carried_original(text: str) -> str:
        """The envelope recipient a carried failure was expanded from ("" when unknown)."""
        try:
            return str(json.loads(text).get("original", ""))
        except (ValueError, AttributeError):
            return ""


def delivered(
    recipient: str, diagnostic: str, transport: str = "local", remote_mta: str = "", *, original: str = ""
) -> RecipientOutcome:
    return RecipientOutcome(recipient, Status.DELIVERED, "2.0.0", diagnostic, transport, remote_mta, original)


def temporary(
    recipient: str,
    enhanced: str,
    diagnostic: str,
    transport: str = "local",
    remote_mta: str = "",
    *,
    original: str = "",
) -> RecipientOutcome:
    return RecipientOutcome(recipient, Status.TEMPORARY, enhanced, diagnostic, transport, remote_mta, original)


def permanent(
    recipient: str,
    enhanced: str,
    diagnostic: str,
    transport: str = "local",
    remote_mta: str = "",
    *,
    original: str = "",
) -> RecipientOutcome:
    return RecipientOutcome(recipient, Status.PERMANENT, enhanced, diagnostic, transport, remote_mta, original)
