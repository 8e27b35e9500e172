"""The admin API application: bearer-token auth, JSON errors for every failure, the routes of api/routes.py."""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from services.store import Store
from services.store.accounts import AccountError
from services.store.addresses import AddressError
from services.store.api import routes
from services.store.api.errors import ApiError
from shared.logging import get_logger
from shared.netaddr import HostPort

log = get_logger(__name__)

STORE_KEY = web.AppKey("store", Store)
TOKEN_KEY = web.AppKey("token", str)
QUEUE_KEY = web.AppKey("queue", object)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers)


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure becomes `{"error": ...}`: user mistakes 4xx, our own faults 503/500 without details."""
    try:
        return await handler(request)
    except ApiError as exc:
        return error_response(exc.status, exc.message)
    except (AccountError, AddressError) as exc:
        return error_response(400, str(exc))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error_response(exc.status, exc.reason, headers={k: v for k, v in exc.headers.items() if k == "Allow"})
    except (ConnectionError, TimeoutError, OSError) as exc:
        log.warning("admin api backend unavailable", path=request.path, error=str(exc))
        return error_response(503, "a backend (Redis or RabbitMQ) is unavailable; try again")
    except Exception as exc:
        import redis.exceptions

        if isinstance(exc, redis.exceptions.ConnectionError | redis.exceptions.TimeoutError):
            log.warning("admin api redis unavailable", path=request.path, error=str(exc))
            return error_response(503, "Redis is unavailable; try again")
        log.exception("admin api internal error", path=request.path)
        return error_response(500, "internal error")


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """`Authorization: Bearer <token>` on every request; no token configured means every request is refused."""
    token = request.app[TOKEN_KEY]
    supplied = request.headers.get("Authorization", "")
    scheme, _, value = supplied.partition(" ")
    challenge = {"WWW-Authenticate": 'Bearer realm="postroom"'}
    if not token:
        return error_response(401, "the admin API is disabled: POSTROOM_ADMIN_TOKEN is not set", challenge)
    # Compared in constant time so the token cannot be guessed byte by byte from response times.
    if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(), token.encode()):
        return error_response(401, "missing or wrong bearer token", challenge)
    return await handler(request)


def create_app(store: Store, token: str | None, queue: Any = None) -> web.Application:
    # A bounded body size: the API takes small JSON documents only.
    app = web.Application(middlewares=[errors_middleware, auth_middleware], client_max_size=64 * 1024)
    app[STORE_KEY] = store
    app[TOKEN_KEY] = token or ""
    app[QUEUE_KEY] = queue
    routes.add_routes(app)
    return app


class AdminServer:
    """Runs the admin app on its listen address; `listening` feeds the service's readiness check."""

    def __init__(self, app: web.Application, listen: HostPort) -> None:
        self.app = app
        self.listen = listen
        self.port = listen.port
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.listen.host, self.listen.port, reuse_address=True)
        await site.start()
        server = site._server
        if server is not None and server.sockets:  # type: ignore[attr-defined]
            self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]

    @property
    def listening(self) -> bool:
        return self._runner is not None and bool(self._runner.sites)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


def dumps(value: Any) -> str:
    return json.dumps(value, default=str)
