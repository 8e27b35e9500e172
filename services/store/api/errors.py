"""The one error type handlers raise to answer with a 4xx JSON error."""

from __future__ import annotations


class ApiError(Exception):
    """A client mistake: `status` (4xx) and a message safe to show."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
