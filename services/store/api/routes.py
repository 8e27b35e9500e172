"""Handlers of the admin API (docs/admin.md "The admin API"); each returns JSON, failures raise ApiError."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any, TypeVar

from aiohttp import web
from pydantic import ValidationError

from services.store import Store, parse_rate
from services.store.accounts import ConflictError, NotFoundError
from services.store.addresses import validate_address, validate_domain
from services.store.api import queue_routes
from services.store.api.errors import ApiError
from services.store.api.keys import QUEUE_KEY, STORE_KEY
from services.store.api.models import AliasIn, Body, DkimIn, DomainIn, RequeueIn, UserIn, UserPatch
from services.store.api.openapi import OPENAPI
from services.store.keys import normalize_address
from services.store.queue_admin import QueueAdmin
from shared.queue_id import is_queue_id

BodyT = TypeVar("BodyT", bound=Body)


def _store(request: web.Request) -> Store:
    return request.app[STORE_KEY]


def _queue(request: web.Request) -> Any:
    queue = request.app[QUEUE_KEY]
    if queue is None:
        raise ApiError(404, "queue operations are not configured here")
    return queue


def _utf8(value: Any) -> None:
    """JSON may carry lone surrogates ("\\ud800") that Python keeps but no encoder takes: refuse them here."""
    if isinstance(value, str):
        value.encode()
    elif isinstance(value, list):
        for item in value:
            _utf8(item)
    elif isinstance(value, dict):
        for key, item in value.items():
            _utf8(key)
            _utf8(item)


async def _body(request: web.Request, model: type[BodyT]) -> BodyT:
    try:
        data = json.loads(await request.read())
        _utf8(data)
    except (ValueError, UnicodeError):
        raise ApiError(400, "the body must be a JSON object in UTF-8") from None
    if not isinstance(data, dict):
        raise ApiError(400, "the body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise ApiError(400, f"{where}: {first['msg']}") from None


def _param(request: web.Request, name: str) -> str:
    value = request.match_info[name]
    try:
        value.encode()
    except UnicodeError:
        raise ApiError(400, f"bad {name}") from None
    return value


def _address(request: web.Request) -> str:
    return validate_address(_param(request, "address")).lower()


def _no_content() -> web.Response:
    return web.Response(status=204)


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(OPENAPI)


# -- domains -----------------------------------------------------------------------------------------------------
async def list_domains(request: web.Request) -> web.Response:
    return web.json_response({"domains": await _store(request).accounts.list_domains()})


async def add_domain(request: web.Request) -> web.Response:
    body = await _body(request, DomainIn)
    domain = validate_domain(body.domain)
    if not await _store(request).accounts.add_domain(domain):
        raise ConflictError(f"domain {domain} already exists")
    return web.json_response({"domain": domain}, status=201)


async def remove_domain(request: web.Request) -> web.Response:
    domain = validate_domain(_param(request, "domain"))
    if not await _store(request).accounts.remove_domain(domain):
        raise NotFoundError(f"no such domain {domain}")
    return _no_content()


# -- DKIM keys of a domain: the records to publish, never a private key -------------------------------------------
async def list_dkim(request: web.Request) -> web.Response:
    domain = validate_domain(_param(request, "domain"))
    keys = await _store(request).dkim.show(domain)
    return web.json_response({"domain": domain, "keys": [k.public() for k in keys]})


async def add_dkim(request: web.Request) -> web.Response:
    domain = validate_domain(_param(request, "domain"))
    body = await _body(request, DkimIn)
    key = await _store(request).dkim.generate(domain, body.selector, body.algorithm)
    return web.json_response(key.public(), status=201)


async def remove_dkim(request: web.Request) -> web.Response:
    domain = validate_domain(_param(request, "domain"))
    selector = _param(request, "selector")
    if not await _store(request).dkim.remove(domain, selector):
        raise NotFoundError(f"no DKIM key {selector.strip().lower()} for {domain}")
    return _no_content()


# -- users -------------------------------------------------------------------------------------------------------
async def _user_json(store: Store, address: str) -> dict[str, Any]:
    user = await store.accounts.get_user(address)
    if user is None:
        raise NotFoundError(f"no such user {address}")
    return asdict(user)


async def list_users(request: web.Request) -> web.Response:
    store = _store(request)
    users = [await store.accounts.get_user(a) for a in await store.accounts.list_users()]
    return web.json_response({"users": [asdict(u) for u in users if u is not None]})


async def add_user(request: web.Request) -> web.Response:
    body = await _body(request, UserIn)
    user = await _store(request).accounts.add_user(body.address, body.password, body.quota)
    return web.json_response(asdict(user), status=201)


async def get_user(request: web.Request) -> web.Response:
    return web.json_response(await _user_json(_store(request), _address(request)))


async def patch_user(request: web.Request) -> web.Response:
    address = _address(request)
    body = await _body(request, UserPatch)
    store = _store(request)
    if body.quota is not None:
        await store.accounts.set_quota(address, body.quota)
    if body.send_limit is not None:
        text = body.send_limit.strip()
        limit = None if text.lower() == "default" else parse_rate(text, recipients=True)
        await store.accounts.set_send_limit(address, limit)
    if body.password is not None:
        await store.accounts.set_password(address, body.password)
    return web.json_response(await _user_json(store, address))


async def remove_user(request: web.Request) -> web.Response:
    address = _address(request)
    if not await _store(request).accounts.remove_user(address):
        raise NotFoundError(f"no such user {address}")
    return _no_content()


# -- aliases -----------------------------------------------------------------------------------------------------
async def list_aliases(request: web.Request) -> web.Response:
    aliases = await _store(request).accounts.list_aliases()
    return web.json_response({"aliases": [{"address": k, "targets": v} for k, v in aliases.items()]})


async def add_alias(request: web.Request) -> web.Response:
    body = await _body(request, AliasIn)
    store = _store(request)
    await store.accounts.add_alias(body.address, body.targets)
    source = normalize_address(body.address)
    return web.json_response({"address": source, "targets": await store.accounts.alias_targets(source)}, status=201)


async def remove_alias(request: web.Request) -> web.Response:
    source = normalize_address(_param(request, "address"))
    if not await _store(request).accounts.remove_alias(source):
        raise NotFoundError(f"no such alias {source}")
    return _no_content()


# -- queue and trace ---------------------------------------------------------------------------------------------
def _limit(request: web.Request, default: int = 100, maximum: int = 1000) -> int:
    text = request.query.get("limit", str(default))
    if not text.isascii() or not text.isdigit() or not 0 <= int(text) <= maximum:
        raise ApiError(400, f"limit must be an integer from 0 to {maximum}")
    return int(text)


async def queue_status(request: web.Request) -> web.Response:
    queue = _queue(request)
    # Depths only unless dead letters are asked for: a look at the queue must not touch what is in it.
    limit = _limit(request, default=0)
    status = await queue.status()
    dead = await queue.dead_letters(limit) if limit else []
    return web.json_response({"queues": [asdict(q) for q in status], "dead_letters": [asdict(d) for d in dead]})


async def requeue_dead(request: web.Request) -> web.Response:
    body = await _body(request, RequeueIn)
    bad = [q for q in body.queue_ids if not is_queue_id(q)]
    if bad:
        raise ApiError(400, f"not a queue id: {bad[0]!r}")
    moved = await _queue(request).requeue(None if body.all else body.queue_ids)
    return web.json_response({"requeued": moved})


async def purge_dead(request: web.Request) -> web.Response:
    return web.json_response({"purged": await QueueAdmin(_store(request), _queue(request), "api").purge_dead()})


async def trace(request: web.Request) -> web.Response:
    queue_id = _param(request, "queue_id")
    if not is_queue_id(queue_id):
        raise ApiError(400, "not a queue id")
    events = await _store(request).trace.events(queue_id)
    if not events:
        raise NotFoundError(f"no trace for {queue_id} (unknown, or older than the retention)")
    return web.json_response({"queue_id": queue_id, "events": events})


# The query parameters each route takes; any other is a 400, so a typo is not silently ignored.
QUERY_PARAMETERS: dict[str, frozenset[str]] = {"/api/v1/queue": frozenset({"limit"}), **queue_routes.QUERY_PARAMETERS}


def check_query(request: web.Request) -> None:
    resource = request.match_info.route.resource
    if resource is None:  # no route matched: the handler answers 404 or 405, whatever the query
        return
    allowed = QUERY_PARAMETERS.get(resource.canonical, frozenset())
    unknown = sorted(set(request.query) - allowed)
    if unknown:
        raise ApiError(400, f"unknown query parameter {unknown[0]!r}")
    repeated = [name for name in allowed if len(request.query.getall(name, [])) > 1]
    if repeated:
        raise ApiError(400, f"query parameter {repeated[0]!r} given more than once")


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_get("/api/v1/openapi.json", openapi)
    r.add_get("/api/v1/domains", list_domains)
    r.add_post("/api/v1/domains", add_domain)
    r.add_delete("/api/v1/domains/{domain}", remove_domain)
    r.add_get("/api/v1/domains/{domain}/dkim", list_dkim)
    r.add_post("/api/v1/domains/{domain}/dkim", add_dkim)
    r.add_delete("/api/v1/domains/{domain}/dkim/{selector}", remove_dkim)
    r.add_get("/api/v1/users", list_users)
    r.add_post("/api/v1/users", add_user)
    r.add_get("/api/v1/users/{address}", get_user)
    r.add_patch("/api/v1/users/{address}", patch_user)
    r.add_delete("/api/v1/users/{address}", remove_user)
    r.add_get("/api/v1/aliases", list_aliases)
    r.add_post("/api/v1/aliases", add_alias)
    r.add_delete("/api/v1/aliases/{address}", remove_alias)
    r.add_get("/api/v1/queue", queue_status)
    r.add_post("/api/v1/queue/dead/requeue", requeue_dead)
    r.add_delete("/api/v1/queue/dead", purge_dead)
    r.add_get("/api/v1/trace/{queue_id}", trace)
    queue_routes.add_routes(app)
