"""Typed keys of what the admin application carries (store, token, queue operations)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from services.store import Store

STORE_KEY = web.AppKey("store", Store)
TOKEN_KEY = web.AppKey("token", str)
QUEUE_KEY: web.AppKey[Any] = web.AppKey("queue")
