"""Built-in ACME (RFC 8555): the store orders the listeners' certificate over HTTP-01 and keeps it in Redis.

One loop per store replica looks at the stored certificate every POSTROOM_ACME_CHECK_INTERVAL; when there is none,
its names differ from POSTROOM_ACME_DOMAINS, or it ends within POSTROOM_ACME_RENEW_BEFORE, the replica that takes the
`acme:lock` orders a new one (the others wait and find it). The CA fetches each HTTP-01 answer from
`http://NAME/.well-known/acme-challenge/TOKEN`, which the autoconfig listener of whichever replica it reaches serves
from Redis. The account key and the certificate's key are made here and kept in Redis too. certbot's `acme` client is
blocking (requests), so its calls run on a thread; everything touching Redis stays on the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import secrets
import time
from typing import Any

from acme import challenges, messages
from acme.client import ClientNetwork, ClientV2
from acme.crypto_util import make_csr
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from josepy.jwk import JWKRSA

from services.store.certificates import REDIS_ERRORS, AcmeAccount, AcmeData
from services.store.config import AcmeConfig
from services.store.metrics import ACME_EXPIRY, ACME_ORDERS
from shared.logging import get_logger

log = get_logger(__name__)

# How long one order may take (authorizations polled, then finalization); the lock outlives it so that a replica
# never orders beside another one still working, and frees itself when the replica that held it died.
ORDER_TIMEOUT = 120.0
LOCK_TTL = ORDER_TIMEOUT + 60.0
# The certificate's key is ECDSA P-256, certbot's default since 2.0 and what current mail clients take. The account
# key is RSA: RS256 is the one JWS algorithm every CA accepts.
RSA_BITS = 2048
USER_AGENT = "postroom"


def _rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)


def _certificate_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


class AcmeManager:
    """Keeps a valid certificate for `config.domains` in the store; `run` for a service's life."""

    def __init__(self, data: AcmeData, config: AcmeConfig) -> None:
        self.data = data
        self.config = config
        self.owner = secrets.token_hex(8)
        self.failures = 0  # orders failed in a row

    async def run(self, stop: asyncio.Event) -> None:
        """Check, order when due, wait; until `stop`."""
        while not stop.is_set():
            delay = await self.step()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)

    async def step(self) -> float:
        """One look (and an order when one is due); the seconds until the next look."""
        try:
            reason, wait = await self._due()
            if reason is None:
                return wait
            if not await self.data.lock(self.owner, LOCK_TTL):
                return self.config.retry_delay  # another replica orders; its certificate will be found then
        except REDIS_ERRORS as exc:
            log.warning("acme: the store is unavailable", error=str(exc))
            return self.config.retry_delay
        try:
            return await self._order_if_due()
        finally:
            with contextlib.suppress(*REDIS_ERRORS):
                await self.data.unlock(self.owner)

    async def _due(self) -> tuple[str | None, float]:
        """Why a certificate must be ordered now (None: it need not), and else how long until it must."""
        stored = await self.data.certificate()
        ACME_EXPIRY.set(0 if stored is None else stored.not_after)
        if stored is None:
            return "no certificate", 0.0
        if set(stored.domains) != set(self.config.domains):
            return "names changed", 0.0
        left = stored.not_after - self.config.renew_before - time.time()
        if left <= 0:
            return "renewal due", 0.0
        return None, min(self.config.check_interval, left)

    async def _order_if_due(self) -> float:
        """Under the lock: look again (a replica may have just finished), then order; a failure is retried later."""
        try:
            reason, wait = await self._due()
            if reason is None:
                return wait
            await self.order(reason)
        except Exception as exc:  # the CA down, refusing, timing out, Redis gone: all wait and try again
            self.failures += 1
            ACME_ORDERS.labels("failed").inc()
            delay = min(self.config.retry_delay * 2.0 ** (self.failures - 1), max(self.config.check_interval, 1.0))
            log.error(
                "acme order failed",
                domains=",".join(self.config.domains),
                failures=self.failures,
                retry_in=round(delay, 1),
                error=f"{type(exc).__name__}: {exc}",
            )
            return delay
        self.failures = 0
        return 0.0  # look again at once: the new certificate sets the next wait

    async def order(self, reason: str) -> None:
        """Order a certificate for the configured names and keep it, with its new key, in the store."""
        key = _certificate_key()
        csr = make_csr(_pem(key).encode(), list(self.config.domains))
        account_key, client = await self._client()
        try:
            order = await asyncio.to_thread(client.new_order, csr)
        except messages.Error as exc:
            # A CA that no longer knows our account (a reset CA, an account removed by its operator) refuses every
            # order with it: register a new one and order again, instead of failing until someone intervenes.
            if exc.code != "accountDoesNotExist" or client.net.account is None:
                raise
            log.warning("acme account refused by the CA: registering a new one", error=str(exc))
            await self.data.drop_account(client.net.account.uri)
            account_key, client = await self._client()
            order = await asyncio.to_thread(client.new_order, csr)
        answers = _http01(order, account_key)
        try:
            for token, (_, _, validation) in answers.items():
                await self.data.put_challenge(token, validation, LOCK_TTL)
            for challenge, response, _ in answers.values():
                await asyncio.to_thread(client.answer_challenge, challenge, response)
            deadline = datetime.datetime.now() + datetime.timedelta(seconds=ORDER_TIMEOUT)
            done = await asyncio.to_thread(client.poll_and_finalize, order, deadline)
        finally:
            with contextlib.suppress(*REDIS_ERRORS):
                for token in answers:
                    await self.data.drop_challenge(token)
        stored = await self.data.put_certificate(done.fullchain_pem, _pem(key), self.config.domains)
        ACME_ORDERS.labels("issued").inc()
        log.info(
            "acme certificate issued",
            reason=reason,
            domains=",".join(stored.domains),
            not_after=datetime.datetime.fromtimestamp(stored.not_after, datetime.UTC).isoformat(),
        )

    async def _client(self) -> tuple[JWKRSA, ClientV2]:
        """A client on the stored account, or on a new one when there is none for this directory."""
        account = await self.data.account()
        if account is not None and account.directory == self.config.directory:
            key = JWKRSA.json_loads(account.key)
            registration = messages.RegistrationResource(body=messages.Registration(), uri=account.uri)
            return key, await asyncio.to_thread(self._connect, key, registration)
        key = JWKRSA(key=await asyncio.to_thread(_rsa_key))
        client = await asyncio.to_thread(self._connect, key, None)
        new = messages.NewRegistration.from_data(email=self.config.email, terms_of_service_agreed=True)
        registration = await asyncio.to_thread(client.new_account, new)
        await self.data.put_account(AcmeAccount(self.config.directory, key.json_dumps(), registration.uri))
        log.info("acme account registered", directory=self.config.directory, account=registration.uri)
        return key, client

    def _connect(self, key: JWKRSA, account: messages.RegistrationResource | None) -> ClientV2:
        # requests takes a CA bundle's path where acme passes `verify_ssl` on as `verify` (tests/store/test_acme.py
        # orders from pebble over HTTPS with its own CA through this).
        verify: Any = self.config.ca_file or True
        network = ClientNetwork(key, account=account, verify_ssl=verify, user_agent=USER_AGENT, timeout=30)
        return ClientV2(ClientV2.get_directory(self.config.directory, network), network)


Answer = tuple[messages.ChallengeBody, challenges.ChallengeResponse, str]


def _http01(order: messages.OrderResource, account_key: JWKRSA) -> dict[str, Answer]:
    """token → (the HTTP-01 challenge, our response, the key authorization the CA fetches: RFC 8555 §8.3) of each
    authorization still pending."""
    answers: dict[str, Answer] = {}
    for authorization in order.authorizations:
        if authorization.body.status == messages.STATUS_VALID:
            continue  # the CA remembers a recent validation of this name
        for challenge in authorization.body.challenges:
            if isinstance(challenge.chall, challenges.HTTP01):
                response, validation = challenge.response_and_validation(account_key)
                answers[challenge.chall.encode("token")] = (challenge, response, validation)
                break
        else:
            name = authorization.body.identifier.value
            raise ValueError(f"the CA offers no HTTP-01 challenge for {name}")
    return answers
