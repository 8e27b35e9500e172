"""The admin API application: bearer-token auth, JSON errors for every failure, the routes of api/routes.py."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import Any

import aiormq
import redis.exceptions
from aiohttp import web

from services.store import Store
from services.store.accounts import AccountError, ConflictError, NotFoundError
from services.store.addresses import AddressError
from services.store.api import routes
from services.store.api.errors import ApiError
from services.store.api.keys import QUEUE_KEY, STORE_KEY, TOKEN_KEY
from services.store.metrics import API_REQUESTS
from services.store.queue_ops import QueueError
from shared.logging import get_logger
from shared.netaddr import HostPort

log = get_logger(__name__)

# Redis failures that mean "down or unreachable", on a single server or a cluster: a 503, not our bug.
_REDIS_DOWN = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.ClusterDownError,
    redis.exceptions.RedisClusterException,
)

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
    except NotFoundError as exc:
        return error_response(404, str(exc))
    except ConflictError as exc:
        return error_response(409, str(exc))
    except (AccountError, AddressError) as exc:
        return error_response(400, str(exc))
    except UnicodeError:
        return error_response(400, "text must be valid UTF-8")
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error_response(exc.status, exc.reason, headers={k: v for k, v in exc.headers.items() if k == "Allow"})
    except QueueError as exc:
        log.warning("admin api queue operation failed", path=request.path, error=str(exc))
        return error_response(503, str(exc))
    except _REDIS_DOWN as exc:
        log.warning("admin api redis unavailable", path=request.path, error=str(exc))
        return error_response(503, "Redis is unavailable; try again")
    except aiormq.exceptions.AMQPError as exc:
        log.warning("admin api rabbitmq failure", path=request.path, error=repr(exc))
        return error_response(503, "RabbitMQ failed the operation; try again")
    except (ConnectionError, TimeoutError, OSError) as exc:
        log.warning("admin api backend unavailable", path=request.path, error=str(exc))
        return error_response(503, "a backend (Redis or RabbitMQ) is unavailable; try again")
    except Exception:
        # A bug of ours: the details go to the log only (docs/design.md invariant 8).
        log.exception("admin api internal error", path=request.path)
        return error_response(500, "internal error")


@web.middleware
async def metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    response = await handler(request)
    # Bounded labels: the method only when it is one we serve, the numeric status.
    method = request.method if request.method in ("GET", "POST", "PATCH", "DELETE") else "other"
    API_REQUESTS.labels(method, str(response.status)).inc()
    return response


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
    routes.check_query(request)
    return await handler(request)


def create_app(store: Store, token: str | None, queue: Any = None) -> web.Application:
    # A bounded body size: the API takes small JSON documents only.
    app = web.Application(
        middlewares=[metrics_middleware, errors_middleware, auth_middleware], client_max_size=64 * 1024
    )
    app[STORE_KEY] = store
    app[TOKEN_KEY] = token or ""
    app[QUEUE_KEY] = queue
    routes.add_routes(app)
    return app


class AdminServer:
    """Runs the admin app on its listen address; `listening` feeds the service's readiness check."""

    def __init__(self, app: web.Application, listen: HostPort, drain_timeout: float = 60.0) -> None:
        self.app = app
        self.listen = listen
        self.drain_timeout = drain_timeout
        self.port = listen.port
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        # A request line up to 32 KiB: the queue listing's three text filters of up to 512 characters each,
        # percent-encoded UTF-8, exceed aiohttp's default of 8190 bytes (which it refuses as text/plain, not JSON).
        self._runner = web.AppRunner(
            self.app, access_log=None, handle_signals=False, max_line_size=32768, shutdown_timeout=self.drain_timeout
        )
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
        """Stop listening; requests in progress get the drain timeout to finish."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
