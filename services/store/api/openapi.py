"""The OpenAPI 3.0 document of the admin API, served at /api/v1/openapi.json."""

from __future__ import annotations

from typing import Any

OPENAPI: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {"title": "Postroom admin API", "version": "1"},
    "paths": {},
}
