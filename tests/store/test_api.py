"""The admin API over real HTTP against the real Redis: auth, every resource, 4xx JSON errors, the OpenAPI document."""

from __future__ import annotations

from collections.abc import Callable

import requests
from openapi_spec_validator import validate

from services.store.api.openapi import OPENAPI
from tests.helpers import free_port
from tests.store.conftest import AdminAPI


def call(admin: AdminAPI, method: str, path: str, **kwargs) -> requests.Response:  # type: ignore[no-untyped-def]
    headers = {**admin.headers(), **kwargs.pop("headers", {})}
    return requests.request(method, admin.url + path, headers=headers, timeout=10, **kwargs)


def assert_error(response: requests.Response, status: int) -> str:
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["Content-Type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"} and isinstance(body["error"], str) and body["error"]
    return str(body["error"])


def test_bearer_token_required(admin: AdminAPI) -> None:
    assert_error(requests.get(admin.url + "/api/v1/domains", timeout=10), 401)
    assert_error(requests.get(admin.url + "/api/v1/domains", headers={"Authorization": "Bearer nope"}, timeout=10), 401)
    assert_error(
        requests.get(admin.url + "/api/v1/domains", headers={"Authorization": "Basic dGVzdA=="}, timeout=10), 401
    )
    unauthorised = requests.get(admin.url + "/api/v1/nowhere", timeout=10)
    assert_error(unauthorised, 401)
    assert unauthorised.headers["WWW-Authenticate"].startswith("Bearer")
    assert call(admin, "GET", "/api/v1/domains").status_code == 200


def test_no_token_configured_refuses_everything(admin_factory: Callable[..., AdminAPI]) -> None:
    admin = admin_factory(token=None)
    for header in ({}, {"Authorization": "Bearer "}, {"Authorization": "Bearer None"}):
        assert "POSTROOM_ADMIN_TOKEN" in assert_error(
            requests.get(admin.url + "/api/v1/domains", headers=header, timeout=10), 401
        )


def test_domains(admin: AdminAPI) -> None:
    assert call(admin, "GET", "/api/v1/domains").json() == {"domains": []}
    created = call(admin, "POST", "/api/v1/domains", json={"domain": "Example.TEST"})
    assert created.status_code == 201 and created.json() == {"domain": "example.test"}
    assert_error(call(admin, "POST", "/api/v1/domains", json={"domain": "example.test"}), 409)
    assert_error(call(admin, "POST", "/api/v1/domains", json={"domain": "-bad-"}), 400)
    assert call(admin, "GET", "/api/v1/domains").json() == {"domains": ["example.test"]}
    assert call(admin, "DELETE", "/api/v1/domains/example.test").status_code == 204
    assert_error(call(admin, "DELETE", "/api/v1/domains/example.test"), 404)


def test_users(admin: AdminAPI) -> None:
    call(admin, "POST", "/api/v1/domains", json={"domain": "example.test"})
    created = call(
        admin, "POST", "/api/v1/users", json={"address": "Alice@example.test", "password": "pw", "quota": 10}
    )
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["address"] == "alice@example.test" and body["quota"] == 10 and body["messages"] == 0
    assert_error(call(admin, "POST", "/api/v1/users", json={"address": "alice@example.test", "password": "x"}), 409)
    assert_error(call(admin, "POST", "/api/v1/users", json={"address": "bob@elsewhere.test", "password": "x"}), 400)
    assert_error(call(admin, "POST", "/api/v1/users", json={"address": "bob@example.test", "password": ""}), 400)
    assert_error(
        call(admin, "POST", "/api/v1/users", json={"address": "b@example.test", "password": "x", "quota": -1}), 400
    )
    assert_error(
        call(admin, "POST", "/api/v1/users", json={"address": "b@example.test", "password": "x", "admin": 1}), 400
    )
    assert_error(call(admin, "DELETE", "/api/v1/domains/example.test"), 409)
    assert call(admin, "GET", "/api/v1/users/alice@example.test").json()["quota"] == 10
    patched = call(admin, "PATCH", "/api/v1/users/alice@example.test", json={"quota": 2048, "password": "new"})
    assert patched.status_code == 200 and patched.json()["quota"] == 2048
    assert_error(call(admin, "PATCH", "/api/v1/users/alice@example.test", json={}), 400)
    assert_error(call(admin, "PATCH", "/api/v1/users/nobody@example.test", json={"quota": 1}), 404)
    assert [u["address"] for u in call(admin, "GET", "/api/v1/users").json()["users"]] == ["alice@example.test"]
    assert call(admin, "DELETE", "/api/v1/users/alice@example.test").status_code == 204
    assert_error(call(admin, "GET", "/api/v1/users/alice@example.test"), 404)
    assert_error(call(admin, "DELETE", "/api/v1/users/alice@example.test"), 404)
    assert_error(call(admin, "GET", "/api/v1/users/not-an-address"), 400)


def test_aliases(admin: AdminAPI) -> None:
    call(admin, "POST", "/api/v1/domains", json={"domain": "example.test"})
    created = call(admin, "POST", "/api/v1/aliases", json={"address": "@example.test", "targets": ["x@remote.test"]})
    assert created.status_code == 201 and created.json() == {"address": "@example.test", "targets": ["x@remote.test"]}
    assert_error(call(admin, "POST", "/api/v1/aliases", json={"address": "a@example.test", "targets": []}), 400)
    assert_error(call(admin, "POST", "/api/v1/aliases", json={"address": "a@other.test", "targets": ["b@x.test"]}), 400)
    assert_error(call(admin, "POST", "/api/v1/aliases", json={"address": "a@example.test", "targets": ["nope"]}), 400)
    listed = call(admin, "GET", "/api/v1/aliases").json()
    assert listed == {"aliases": [{"address": "@example.test", "targets": ["x@remote.test"]}]}
    assert call(admin, "DELETE", "/api/v1/aliases/@example.test").status_code == 204
    assert_error(call(admin, "DELETE", "/api/v1/aliases/@example.test"), 404)


def test_bad_requests_are_4xx_json(admin: AdminAPI) -> None:
    assert_error(call(admin, "POST", "/api/v1/domains", data=b"{not json"), 400)
    assert_error(call(admin, "POST", "/api/v1/domains", data=b"[1, 2]"), 400)
    assert_error(call(admin, "POST", "/api/v1/domains", data=b"\xff\xfe"), 400)
    assert_error(call(admin, "POST", "/api/v1/domains", data=b'{"domain": "\\ud800.test"}'), 400)
    assert_error(call(admin, "POST", "/api/v1/domains", json={"domain": 5}), 400)
    assert_error(call(admin, "POST", "/api/v1/domains", data=b"x" * 200_000), 413)
    assert_error(call(admin, "PUT", "/api/v1/domains"), 405)
    assert_error(call(admin, "GET", "/api/v1/nowhere"), 404)
    assert_error(call(admin, "GET", "/api/v1/users/%00@example.test"), 400)
    assert_error(call(admin, "GET", "/api/v1/queue?limit=-1"), 400)
    assert_error(call(admin, "GET", "/api/v1/queue?limit=abc"), 400)
    assert_error(call(admin, "GET", "/api/v1/trace/not-a-queue-id"), 400)


def test_redis_down_is_503(admin_factory: Callable[..., AdminAPI]) -> None:
    admin = admin_factory(redis_url=f"redis://127.0.0.1:{free_port()}/0")
    assert_error(call(admin, "GET", "/api/v1/domains"), 503)


def test_rabbitmq_down_is_503(admin_factory: Callable[..., AdminAPI]) -> None:
    admin = admin_factory(amqp_url=f"amqp://guest:guest@127.0.0.1:{free_port()}/")
    assert "RabbitMQ" in assert_error(call(admin, "GET", "/api/v1/queue"), 503)


def test_openapi_document_is_served_valid_and_complete(admin: AdminAPI) -> None:
    served = call(admin, "GET", "/api/v1/openapi.json")
    assert served.status_code == 200 and served.json() == OPENAPI
    validate(served.json())
    documented = {
        (path, method.upper()) for path, item in OPENAPI["paths"].items() for method in item if method != "parameters"
    }
    from aiohttp import web

    from services.store.api.routes import add_routes

    app = web.Application()
    add_routes(app)
    routed = {
        (route.resource.canonical, route.method)
        for route in app.router.routes()
        if route.resource is not None and route.method != "HEAD"
    }
    assert routed == documented


async def test_a_bug_is_a_generic_500_with_details_only_in_the_log(store) -> None:  # type: ignore[no-untyped-def]
    from aiohttp import web
    from aiohttp.test_utils import TestClient, TestServer

    from services.store.api import create_app

    app = create_app(store, "t0ken")

    async def broken(request: web.Request) -> web.Response:
        raise RuntimeError("secret internal detail")

    app.router.add_get("/api/v1/broken", broken)
    async with TestClient(TestServer(app)) as client:
        response = await client.get("/api/v1/broken", headers={"Authorization": "Bearer t0ken"})
        assert response.status == 500
        assert await response.json() == {"error": "internal error"}
