"""Sender Rewriting Scheme (SRS) for mail that a local alias forwards to another domain.

The envelope sender of the forwarded copy becomes an address of ours (so the destination's SPF check sees our
domain), and a bounce sent back to that address is routed to the original sender. The rewriting and its HMAC are
srslib's (libsrs2's Guarded scheme, hashes compared without case); the secret is POSTROOM_SRS_SECRET, shared by the
ingress and the delivery.
"""

from __future__ import annotations

import srslib
from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.settings import ENV_PREFIX

# A bounce may come back this many days after the forward (srslib's and libsrs2's default).
VALIDITY_DAYS = 21


class SrsSettings(BaseSettings):
    """Unset: forwarded mail keeps its original envelope sender and no SRS address is accepted."""

    # The same as CommonSettings': pydantic merges the configs of all bases, so a default one here would win.
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    srs_secret: SecretStr | None = None


class Srs:
    def __init__(self, secret: SecretStr) -> None:
        self._srs = srslib.SRS(secret.get_secret_value(), validity_days=VALIDITY_DAYS)

    @classmethod
    def of(cls, settings: SrsSettings) -> Srs | None:
        secret = settings.srs_secret
        return cls(secret) if secret is not None and secret.get_secret_value() else None

    def forward(self, sender: str, alias_domain: str) -> str:
        """The envelope sender of a copy forwarded by an alias of `alias_domain`; the sender itself when it is not
        an address srslib can rewrite."""
        try:
            return str(self._srs.forward(sender, alias_domain))
        except srslib.Error:
            return sender

    def reverse(self, address: str) -> str | None:
        """The original sender of an SRS address of ours; None when it is not one, or forged, or expired."""
        local = address.rpartition("@")[0]
        if local[:5].upper() not in ("SRS0=", "SRS1="):
            return None
        try:
            return str(self._srs.reverse(address))
        except (srslib.Error, ValueError, IndexError):
            return None
