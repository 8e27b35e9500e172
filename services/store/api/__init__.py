"""The admin HTTP API (aiohttp): accounts, queue and trace as JSON, behind a bearer token."""

from __future__ import annotations

from services.store.api.app import AdminServer, create_app

__all__ = ["AdminServer", "create_app"]
