"""The OpenAPI 3.0 document of the admin API, served at /api/v1/openapi.json (kept in step by the tests)."""

from __future__ import annotations

from typing import Any

from services.store.api.models import MAX_DOMAIN, MAX_PASSWORD, MAX_QUOTA, MAX_SELECTOR, MAX_TEXT
from services.store.api.queue_routes import ACTIONS
from services.store.queue_index import STATES


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict[str, Any]:
    out = {str(code): {"$ref": f"#/components/responses/E{code}"} for code in (400, 401, *codes, 503)}
    out["default"] = {"$ref": "#/components/responses/Error"}
    return out


def _body(name: str) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": _ref(name)}}}


def _path_param(name: str, description: str, max_length: int = MAX_TEXT) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": {"type": "string", "minLength": 1, "maxLength": max_length},
    }


# A DNS name has at most 255 octets (RFC 1035 §2.3.4); with a selector the request line stays within aiohttp's limit.
_DKIM_DOMAIN = _path_param("domain", "A local domain", MAX_DOMAIN)


_TEXT = {"type": "string", "minLength": 1, "maxLength": MAX_TEXT}
_QUERY_TEXT = {"type": "string", "maxLength": MAX_TEXT}


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "description": description, "schema": schema}


_QUOTA = {"type": "integer", "minimum": 0, "maximum": MAX_QUOTA, "description": "Bytes; 0 means no limit."}
_PASSWORD = {"type": "string", "minLength": 1, "maxLength": MAX_PASSWORD}
_QUEUE_ID = {"type": "string", "pattern": "^[0-9A-HJKMNP-TV-Z]{26}$"}

_STRING = {"type": "string"}
_STRINGS = {"type": "array", "items": _STRING}
_INTEGER = {"type": "integer"}
_BOOLEAN = {"type": "boolean"}
_UNIX_TIME = {"type": "number", "description": "Unix time"}


def _object(properties: dict[str, Any], required: tuple[str, ...] = (), **keywords: Any) -> dict[str, Any]:
    """An object schema: its properties, those `required` (when any) and other keywords (additionalProperties, …)."""
    schema: dict[str, Any] = {"type": "object", **({"required": list(required)} if required else {}), **keywords}
    schema["properties"] = properties
    return schema


def _list_of(name: str, key: str) -> dict[str, Any]:
    """A response of one required property, `key`: an array of schema `name`."""
    return _object({key: {"type": "array", "items": _ref(name)}}, (key,))


def _closed(properties: dict[str, Any], required: tuple[str, ...] = (), **keywords: Any) -> dict[str, Any]:
    """A request body: an object with no properties besides those named."""
    return _object(properties, required, additionalProperties=False, **keywords)


_SCHEMAS: dict[str, Any] = {
    "Error": _object({"error": _STRING}, ("error",)),
    "DomainIn": _closed({"domain": _TEXT}, ("domain",)),
    "Domain": _object({"domain": _STRING}, ("domain",)),
    "Domains": _object({"domains": _STRINGS}, ("domains",)),
    "DkimIn": _closed(
        {
            "selector": {
                "type": "string",
                "minLength": 1,
                "maxLength": MAX_SELECTOR,
                "description": "DNS labels, dot-separated; default ALGORITHM-YYYYMMDD.",
            },
            "algorithm": {"type": "string", "enum": ["rsa", "ed25519"], "default": "rsa"},
        }
    ),
    "DkimKey": _object(
        {
            "domain": _STRING,
            "selector": _STRING,
            "algorithm": {"type": "string", "enum": ["rsa", "ed25519"]},
            "created": _UNIX_TIME,
            "name": {"type": "string", "description": "The DNS name of the TXT record"},
            "record": {"type": "string", "description": "The TXT text; split it into strings of 255 octets at most"},
        },
        ("domain", "selector", "algorithm", "created", "name", "record"),
    ),
    "DkimKeys": _object({"domain": _STRING, "keys": {"type": "array", "items": _ref("DkimKey")}}, ("domain", "keys")),
    "UserIn": _closed({"address": _TEXT, "password": _PASSWORD, "quota": _QUOTA}, ("address", "password")),
    "UserPatch": _closed(
        {
            "password": {**_PASSWORD, "nullable": True},
            "quota": {**_QUOTA, "nullable": True},
            "send_limit": {
                "type": "string",
                "nullable": True,
                "maxLength": 64,
                "description": "Messages (and recipients) the user may send per period on 587/465: N/PERIOD or "
                "MESSAGES,RECIPIENTS/PERIOD (100/1h, 100,1000/1d); 'default' for POSTROOM_SEND_LIMIT.",
            },
        },
        minProperties=1,
        description="At least one of password, quota and send_limit, not null all.",
    ),
    "User": _object(
        {
            "address": _STRING,
            "quota": _INTEGER,
            "created": _UNIX_TIME,
            "messages": _INTEGER,
            "bytes": _INTEGER,
            "send_limit": {
                "type": "string",
                "nullable": True,
                "description": "The user's own send limit (100/1h); null: POSTROOM_SEND_LIMIT.",
            },
        },
        ("address", "quota", "created", "messages", "bytes"),
    ),
    "Users": _list_of("User", "users"),
    "AliasIn": _closed(
        {
            "address": {**_TEXT, "description": "An address, or @domain for a catch-all."},
            "targets": {"type": "array", "minItems": 1, "maxItems": 1000, "items": _STRING},
        },
        ("address", "targets"),
    ),
    "Alias": _object({"address": _STRING, "targets": _STRINGS}, ("address", "targets")),
    "Aliases": _list_of("Alias", "aliases"),
    "QueueInfo": _object(
        {
            "name": _STRING,
            "kind": {"type": "string", "enum": ["incoming", "delay", "dead"]},
            "delay_seconds": {"type": "integer", "nullable": True},
            "exists": _BOOLEAN,
            "messages": {"type": "integer", "description": "Messages ready for delivery"},
            "consumers": _INTEGER,
        },
        ("name", "kind", "exists", "messages", "consumers"),
    ),
    "DeadLetter": _object(
        {
            "queue_id": _STRING,
            "mail_from": _STRING,
            "recipients": _STRINGS,
            "size": _INTEGER,
            "first_seen": {"type": "number", "nullable": True},
            "attempt": _INTEGER,
            "reason": _STRING,
        },
        ("queue_id", "mail_from", "recipients", "size", "reason"),
    ),
    "QueueStatus": _object(
        {
            "queues": {"type": "array", "items": _ref("QueueInfo")},
            "dead_letters": {"type": "array", "items": _ref("DeadLetter")},
        },
        ("queues", "dead_letters"),
    ),
    "RequeueIn": _closed(
        {"queue_ids": {"type": "array", "maxItems": 10000, "items": _QUEUE_ID}, "all": _BOOLEAN},
        description="Either queue_ids or all: true.",
    ),
    "QueueMessage": _object(
        {
            "queue_id": _STRING,
            "state": {"type": "string", "enum": list(STATES)},
            "arrival": {"type": "number", "description": "Unix time the ingress accepted it"},
            "sender": {"type": "string", "description": "Envelope sender; empty for <>"},
            "recipients": {**_STRINGS, "description": "Recipients left"},
            "attempts": _INTEGER,
            "last_error": _STRING,
            "next_attempt": {**_UNIX_TIME, "nullable": True},
            "size": _INTEGER,
            "bounce": _BOOLEAN,
            "updated": {"type": "number", "description": "Unix time of the entry's last change"},
            "overdue": {"type": "boolean", "description": "Long past its next attempt: its copy may be gone"},
        },
        ("queue_id", "state", "arrival", "sender", "recipients", "attempts", "last_error", "size"),
    ),
    "QueueMessages": _list_of("QueueMessage", "messages"),
    "QueueAction": _object(
        {
            "queue_id": _STRING,
            "action": {"type": "string", "enum": list(ACTIONS)},
            **dict.fromkeys(("flushed", "not_waiting", "gone", "held", "deleted"), _STRINGS),
            "bounce": _BOOLEAN,
        },
        ("queue_id", "action"),
        additionalProperties=True,
    ),
    "Requeued": _object({"requeued": _INTEGER}, ("requeued",)),
    "Purged": _object({"purged": _INTEGER}, ("purged",)),
    "TraceEvent": _object(
        {"time": {"type": "number"}, "event": _STRING, "service": _STRING},
        ("time", "event", "service"),
        additionalProperties=True,
    ),
    "Trace": _object(
        {"queue_id": _STRING, "events": {"type": "array", "items": _ref("TraceEvent")}}, ("queue_id", "events")
    ),
}

_RESPONSES = {
    "Error": _json(_ref("Error"), "An error"),
    "E400": _json(_ref("Error"), "Bad input"),
    "E401": _json(_ref("Error"), "Missing or wrong bearer token (or no token configured)"),
    "E404": _json(_ref("Error"), "Not found"),
    "E409": _json(_ref("Error"), "Conflicts with what exists"),
    "E503": _json(_ref("Error"), "Redis or RabbitMQ unavailable"),
}

_ADDRESS = _path_param("address", "A user address (percent-encode '@' if your client needs to)")

OPENAPI: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {
        "title": "Postroom admin API",
        "version": "1",
        "description": "Accounts, queue and message traces. Every request needs `Authorization: Bearer <token>`.",
    },
    "security": [{"bearer": []}],
    "paths": {
        "/api/v1/openapi.json": {
            "get": {
                "operationId": "openapi",
                "summary": "This document",
                "responses": {"200": _json({"type": "object"}, "The OpenAPI document"), **_errors()},
            }
        },
        "/api/v1/domains": {
            "get": {
                "operationId": "listDomains",
                "summary": "Local domains",
                "responses": {"200": _json(_ref("Domains"), "The domains"), **_errors()},
            },
            "post": {
                "operationId": "addDomain",
                "summary": "Add a local domain",
                "requestBody": _body("DomainIn"),
                "responses": {"201": _json(_ref("Domain"), "Added"), **_errors(409)},
            },
        },
        "/api/v1/domains/{domain}": {
            "delete": {
                "operationId": "removeDomain",
                "summary": "Remove a domain without users (its aliases go with it)",
                "parameters": [_path_param("domain", "The domain")],
                "responses": {"204": {"description": "Removed"}, **_errors(404, 409)},
            }
        },
        "/api/v1/domains/{domain}/dkim": {
            "parameters": [_DKIM_DOMAIN],
            "get": {
                "operationId": "listDkimKeys",
                "summary": "The DKIM keys of a domain as DNS records to publish (no private key)",
                "responses": {"200": _json(_ref("DkimKeys"), "The keys"), **_errors(404)},
            },
            "post": {
                "operationId": "generateDkimKey",
                "summary": "Make a DKIM key (RSA-2048 or Ed25519) for a local domain",
                "requestBody": _body("DkimIn"),
                "responses": {"201": _json(_ref("DkimKey"), "Generated"), **_errors(404, 409)},
            },
        },
        "/api/v1/domains/{domain}/dkim/{selector}": {
            "delete": {
                "operationId": "removeDkimKey",
                "summary": "Remove a DKIM key: mail is no longer signed with it",
                "parameters": [_DKIM_DOMAIN, _path_param("selector", "The selector", MAX_SELECTOR)],
                "responses": {"204": {"description": "Removed"}, **_errors(404)},
            }
        },
        "/api/v1/users": {
            "get": {
                "operationId": "listUsers",
                "summary": "Users with quota and usage",
                "responses": {"200": _json(_ref("Users"), "The users"), **_errors()},
            },
            "post": {
                "operationId": "addUser",
                "summary": "Add a user in a local domain",
                "requestBody": _body("UserIn"),
                "responses": {"201": _json(_ref("User"), "Added"), **_errors(409)},
            },
        },
        "/api/v1/users/{address}": {
            "parameters": [_ADDRESS],
            "get": {
                "operationId": "getUser",
                "summary": "One user",
                "responses": {"200": _json(_ref("User"), "The user"), **_errors(404)},
            },
            "patch": {
                "operationId": "updateUser",
                "summary": "Change password, quota and/or send limit",
                "requestBody": _body("UserPatch"),
                "responses": {"200": _json(_ref("User"), "Changed"), **_errors(404)},
            },
            "delete": {
                "operationId": "removeUser",
                "summary": "Remove a user and its mailbox",
                "responses": {"204": {"description": "Removed"}, **_errors(404)},
            },
        },
        "/api/v1/aliases": {
            "get": {
                "operationId": "listAliases",
                "summary": "Aliases and catch-alls",
                "responses": {"200": _json(_ref("Aliases"), "The aliases"), **_errors()},
            },
            "post": {
                "operationId": "addAlias",
                "summary": "Add or replace an alias (targets may be remote)",
                "requestBody": _body("AliasIn"),
                "responses": {"201": _json(_ref("Alias"), "Added"), **_errors()},
            },
        },
        "/api/v1/aliases/{address}": {
            "delete": {
                "operationId": "removeAlias",
                "summary": "Remove an alias",
                "parameters": [_path_param("address", "The alias address or @domain")],
                "responses": {"204": {"description": "Removed"}, **_errors(404)},
            }
        },
        "/api/v1/queue": {
            "get": {
                "operationId": "queueStatus",
                "summary": "Depth and consumers of every queue; with limit, the first dead letters too",
                "parameters": [
                    {
                        "name": "limit",
                        "in": "query",
                        "required": False,
                        "description": (
                            "How many dead letters to list (0: none, and no message is touched). Listed ones are"
                            " handed back to the dead queue, at its back, marked redelivered"
                        ),
                        "schema": {"type": "integer", "minimum": 0, "maximum": 1000, "default": 0},
                    }
                ],
                "responses": {"200": _json(_ref("QueueStatus"), "The queues"), **_errors(404)},
            }
        },
        "/api/v1/queue/dead/requeue": {
            "post": {
                "operationId": "requeueDead",
                "summary": "Move dead letters back to the work queue",
                "requestBody": _body("RequeueIn"),
                "responses": {"200": _json(_ref("Requeued"), "How many moved"), **_errors(404)},
            }
        },
        "/api/v1/queue/dead": {
            "delete": {
                "operationId": "purgeDead",
                "summary": "Delete every dead letter",
                "responses": {"200": _json(_ref("Purged"), "How many deleted"), **_errors(404)},
            }
        },
        "/api/v1/queue/messages": {
            "get": {
                "operationId": "listQueueMessages",
                "summary": "Messages not yet finished, oldest first (`postroom queue list`)",
                "parameters": [
                    _query("state", {"type": "string", "enum": list(STATES)}, "Only messages in this state"),
                    _query("sender", _QUERY_TEXT, "Only messages from this envelope sender"),
                    _query("recipient", _QUERY_TEXT, "Only messages with this recipient left"),
                    _query("domain", _QUERY_TEXT, "Only messages with a recipient left in this domain"),
                ],
                "responses": {"200": _json(_ref("QueueMessages"), "The messages"), **_errors()},
            }
        },
        "/api/v1/queue/messages/{queue_id}/{action}": {
            "post": {
                "operationId": "actOnQueueMessage",
                "summary": (
                    "flush: retry now; hold: not attempted until released; release: back to the queue, retried now;"
                    " delete: never attempted again (bounce=true: returned to the sender)"
                ),
                "parameters": [
                    {
                        "name": "queue_id",
                        "in": "path",
                        "required": True,
                        "description": "The queue id (`postroom queue list`)",
                        "schema": _QUEUE_ID,
                    },
                    {
                        "name": "action",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string", "enum": list(ACTIONS)},
                    },
                    _query("bounce", {"type": "string", "enum": ["true", "false"]}, "delete only: send a bounce"),
                ],
                "responses": {"200": _json(_ref("QueueAction"), "Done"), **_errors(404, 409)},
            }
        },
        "/api/v1/trace/{queue_id}": {
            "get": {
                "operationId": "getTrace",
                "summary": "A message's life in order: accepted, queued, attempts, outcome",
                "parameters": [
                    {
                        "name": "queue_id",
                        "in": "path",
                        "required": True,
                        "description": "The queue id from the 250 reply or the Received: header",
                        "schema": {"type": "string"},
                    }
                ],
                "responses": {"200": _json(_ref("Trace"), "The events"), **_errors(404)},
            }
        },
    },
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        "schemas": _SCHEMAS,
        "responses": _RESPONSES,
    },
}
