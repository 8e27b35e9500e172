"""What the DSN parameters (RFC 3461) of a queued message ask of the delivery: to pass on, and which notices."""

from __future__ import annotations

from collections.abc import Iterable

from services.delivery.outcome import RecipientOutcome
from shared.dsn import xtext_encode
from shared.envelope import Envelope


def mail_parameters(envelope: Envelope) -> list[str]:
    """RET and ENVID for MAIL at a next hop that advertises DSN (§5.2: passed on as received)."""
    options = []
    if envelope.dsn_ret:
        options.append(f"RET={envelope.dsn_ret}")
    if envelope.dsn_envid:
        options.append(f"ENVID={xtext_encode(envelope.dsn_envid)}")
    return options


def rcpt_parameters(envelope: Envelope, original: str) -> list[str]:
    """NOTIFY and ORCPT of the envelope recipient `original` for RCPT at a next hop that advertises DSN."""
    request = envelope.dsn_request(original)
    options = []
    if request.notify:
        options.append(f"NOTIFY={request.notify}")
    if request.orcpt:
        kind, _, address = request.orcpt.partition(";")
        options.append(f"ORCPT={kind};{xtext_encode(address)}")
    return options


def wanting(envelope: Envelope, outcomes: Iterable[RecipientOutcome], kind: str) -> list[RecipientOutcome]:
    """The outcomes whose envelope recipient wants a notice of `kind` (SUCCESS, FAILURE, DELAY); none for a
    message from the null sender, which is never answered (RFC 3461 §6.2, RFC 5321 §4.5.5)."""
    if not envelope.mail_from:
        return []
    return [o for o in outcomes if envelope.dsn_request(o.original or o.recipient).wants(kind)]
