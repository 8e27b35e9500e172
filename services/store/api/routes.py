"""Routes of the admin API (DESIGN.md "Admin API contract")."""

from __future__ import annotations

from aiohttp import web

from services.store.api.openapi import OPENAPI


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(OPENAPI)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/v1/openapi.json", openapi)
