"""Failure types that carry the temporary-versus-permanent decision from where it is made to where it is acted on."""

from __future__ import annotations


class PostroomError(Exception):
    """A failure with a client-safe message, an enhanced status code and a log-only reason."""

    temporary: bool = True

    def __init__(self, message: str, *, enhanced: str = "4.3.0", reason: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.enhanced = enhanced
        self.reason = reason or message


class TemporaryError(PostroomError):
    """Try again later: the same attempt may succeed (4xx)."""

    temporary = True


class PermanentError(PostroomError):
    """Never going to work: bounce or reject (5xx)."""

    temporary = False

    def __init__(self, message: str, *, enhanced: str = "5.0.0", reason: str | None = None) -> None:
        super().__init__(message, enhanced=enhanced, reason=reason)


class ConfigError(Exception):
    """A setting is missing or malformed; the message names the variable."""
