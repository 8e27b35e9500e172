"""The public autoconfig listener: Mozilla autoconfig, Microsoft autodiscover and built-in ACME's HTTP-01 answers.

Autoconfig and autodiscover answer for local domains only.

A separate aiohttp application on its own listener inside the store service: it needs the list of local domains,
which the store has, and a fifth service would be a deployment, an image command and a metrics port for three
routes. It shares nothing with the admin app (no token, no admin route is reachable from this port).
"""

from __future__ import annotations

import re

import redis.exceptions
from aiohttp import web

from services.store import Store
from services.store.addresses import AddressError, validate_address, validate_domain
from services.store.clientconfig.documents import (
    ClientSettings,
    autodiscover_request_address,
    microsoft_autodiscover,
    mozilla_autoconfig,
)
from shared.client_ports import Endpoint
from shared.logging import get_logger

log = get_logger(__name__)

STORE = web.AppKey("store", Store)
SERVER = web.AppKey("server", tuple)
XML = "application/xml"
# An autodiscover request is a few hundred bytes.
MAX_BODY = 16 * 1024


async def _settings_for(request: web.Request, domain: str) -> ClientSettings:
    """The documents' content for `domain`; 404 unless it is one of ours (we describe no one else's mail)."""
    try:
        domain = validate_domain(domain)
        local = await request.app[STORE].accounts.is_local_domain(domain)
    except AddressError:
        raise web.HTTPBadRequest(text="bad domain\n") from None
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError):
        log.warning("autoconfig: redis unavailable", path=request.path)
        raise web.HTTPServiceUnavailable(text="try again later\n") from None
    if not local:
        raise web.HTTPNotFound(text="no mail service for this domain here\n")
    hostname, endpoints = request.app[SERVER]
    return ClientSettings(domain, hostname, list(endpoints))


def _address_domain(address: str) -> str:
    try:
        return validate_address(address).rpartition("@")[2]
    except AddressError:
        raise web.HTTPBadRequest(text="bad emailaddress\n") from None


async def autoconfig(request: web.Request) -> web.Response:
    """Thunderbird asks https://autoconfig.DOMAIN/mail/config-v1.1.xml?emailaddress=… and
    https://DOMAIN/.well-known/autoconfig/mail/config-v1.1.xml; without the address, the Host names the domain."""
    address = request.query.get("emailaddress", "").strip()
    if address:
        domain = _address_domain(address)
    else:
        domain = request.host.rsplit(":", 1)[0] if not request.host.endswith("]") else ""
        domain = domain.removeprefix("autoconfig.")
    settings = await _settings_for(request, domain)
    return web.Response(body=mozilla_autoconfig(settings), content_type=XML, charset="utf-8")


async def autodiscover(request: web.Request) -> web.Response:
    """Outlook POSTs its request (with EMailAddress) to https://autodiscover.DOMAIN/autodiscover/autodiscover.xml."""
    address = autodiscover_request_address(await request.read())
    if address is None:
        raise web.HTTPBadRequest(text="expected an Autodiscover request with EMailAddress\n")
    settings = await _settings_for(request, _address_domain(address))
    return web.Response(body=microsoft_autodiscover(settings, address.strip()), content_type=XML, charset="utf-8")


# An ACME token is base64url (RFC 8555 §8.3: at least 128 bits of entropy); anything else is no token of ours.
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{16,256}$")


async def acme_challenge(request: web.Request) -> web.Response:
    """HTTP-01 (RFC 8555 §8.3): the CA fetches http://NAME/.well-known/acme-challenge/TOKEN from whichever store
    replica it reaches; the one ordering put the answer in Redis (services/store/acme.py)."""
    token = request.match_info["token"]
    if not _TOKEN.match(token):
        raise web.HTTPNotFound(text="no such challenge\n")
    try:
        answer = await request.app[STORE].acme.challenge(token)
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError):
        log.warning("acme challenge: redis unavailable", path=request.path)
        raise web.HTTPServiceUnavailable(text="try again later\n") from None
    if answer is None:
        raise web.HTTPNotFound(text="no such challenge\n")
    return web.Response(text=answer, content_type="application/octet-stream")


def create_autoconfig_app(store: Store, hostname: str, endpoints: list[Endpoint]) -> web.Application:
    app = web.Application(client_max_size=MAX_BODY)
    app[STORE] = store
    app[SERVER] = (hostname, tuple(endpoints))
    for path in ("/.well-known/autoconfig/mail/config-v1.1.xml", "/mail/config-v1.1.xml"):
        app.router.add_get(path, autoconfig)
    # Outlook spells the path both ways.
    for path in ("/autodiscover/autodiscover.xml", "/Autodiscover/Autodiscover.xml"):
        app.router.add_post(path, autodiscover)
    app.router.add_get("/.well-known/acme-challenge/{token}", acme_challenge)
    return app
