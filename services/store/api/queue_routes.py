"""Admin API handlers of the operator's queue: `/api/v1/queue/messages` and the actions on one message."""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from services.store.api.errors import ApiError
from services.store.api.keys import QUEUE_KEY, STORE_KEY
from services.store.queue_admin import FlushReport, QueueAdmin, UnknownQueueId, WrongState
from services.store.queue_index import STATES, Filter
from shared.queue_id import is_queue_id

LIST_PATH = "/api/v1/queue/messages"
ACTION_PATH = "/api/v1/queue/messages/{queue_id}/{action}"
ACTIONS = ("flush", "hold", "release", "delete")
# The query parameters each route takes (routes.check_query refuses any other).
QUERY_PARAMETERS = {
    LIST_PATH: frozenset({"state", "sender", "recipient", "domain"}),
    ACTION_PATH: frozenset({"bounce"}),
}


def _admin(request: web.Request) -> QueueAdmin:
    ops = request.app[QUEUE_KEY]
    if ops is None:
        raise ApiError(404, "queue operations are not configured here")
    return QueueAdmin(request.app[STORE_KEY], ops, "api")


def _text(request: web.Request, name: str) -> str:
    value = request.query.get(name, "")
    if len(value) > 512:
        raise ApiError(400, f"{name} is too long")
    value.encode()  # lone surrogates: UnicodeError, a 400 in the errors middleware
    return value


def _report(report: FlushReport) -> dict[str, Any]:
    return {"flushed": report.flushed, "not_waiting": report.not_waiting, "gone": report.gone}


async def list_messages(request: web.Request) -> web.Response:
    state = _text(request, "state")
    if state and state not in STATES:
        raise ApiError(400, f"state must be one of {', '.join(STATES)}")
    where = Filter(
        states=(state,) if state else (),
        sender=_text(request, "sender"),
        recipient=_text(request, "recipient"),
        domain=_text(request, "domain"),
    )
    now = time.time()
    entries = await request.app[STORE_KEY].queue.entries(where)
    return web.json_response({"messages": [e.as_json(now) for e in entries]})


async def act(request: web.Request) -> web.Response:
    queue_id, action = request.match_info["queue_id"], request.match_info["action"]
    if action not in ACTIONS:
        raise ApiError(404, f"no such action {action!r} (one of {', '.join(ACTIONS)})")
    if not is_queue_id(queue_id):
        raise ApiError(400, "not a queue id")
    bounce = request.query.get("bounce", "false")
    if bounce not in ("true", "false") or (action != "delete" and "bounce" in request.query):
        raise ApiError(400, "bounce is true or false, and only for delete")
    admin = _admin(request)
    try:
        if action == "flush":
            body = _report(await admin.flush([queue_id]))
        elif action == "hold":
            body = {"held": await admin.hold([queue_id])}
        elif action == "release":
            body = _report(await admin.release([queue_id]))
        else:
            body = {
                "deleted": [queue_id],
                "bounce": bounce == "true",
                **_report(await admin.delete([queue_id], bounce == "true")),
            }
    except UnknownQueueId as exc:
        raise ApiError(404, str(exc)) from None
    except WrongState as exc:
        raise ApiError(409, str(exc)) from None
    return web.json_response({"queue_id": queue_id, "action": action, **body})


def add_routes(app: web.Application) -> None:
    app.router.add_get(LIST_PATH, list_messages)
    app.router.add_post(ACTION_PATH, act)
