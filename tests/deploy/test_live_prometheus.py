"""A real Prometheus scrapes the four running services while mail flows; every dashboard query and alert runs."""

from __future__ import annotations

import asyncio
import contextlib
import math
import poplib
import shutil
import smtplib
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from services.store import Store
from shared.netaddr import parse_host_port
from tests.deploy.queries import ALERTS, ROOT, NamedQuery, alert_queries, dashboard_queries, metric_names
from tests.deploy.tools import require
from tests.harness import ServiceProcess
from tests.helpers import REDIS_URL, free_port, http_status, terminate, wait_until, wait_until_sync

SERVICES = ("store", "smtp_ingress", "delivery", "pop3")
MISSING = [name for name in SERVICES if not (ROOT / "services" / name / "__main__.py").exists()]
pytestmark = pytest.mark.skipif(
    bool(MISSING), reason=f"services not in this checkout yet: {', '.join(MISSING)} (no __main__.py)"
)

PASSWORD = "correct horse battery staple"
MESSAGES = 3
# Dashboard queries ("panel title / legend") that must show more than zero after the traffic this test sends.
MUST_BE_POSITIVE = {
    "Accepted / min / A",
    "Delivered / min / A",
    "Messages accepted / {{listener}}",
    "Connections / {{listener}} {{result}}",
    "Rejections / {{stage}} {{code}}",
    "Publish confirm latency / p50",
    "Publish confirm latency / p99",
    "Accepted message size / p50",
    "Delivery outcomes / {{transport}} {{outcome}}",
    "Accept → delivery latency / p50",
    "Accept → delivery latency / p99",
    "Queue messages handled / {{result}}",
    "POP3 sessions / new/s {{listener}}",
    "Commands / {{command}} {{result}}",
    "Messages retrieved and deleted / retrieved",
    "Messages retrieved and deleted / deleted",
    "Bytes sent / sent",
    "Authentication failures / POP3 {{mechanism}}",
    "Permanent rejections by code / {{code}}",
    "Domains / A",
    "Mailboxes / A",
    "Instances up / {{job}}",
    "Store service / admin API {{status}}",
}


class Prometheus:
    """Debian's prometheus binary on a free loopback port, scraping the given jobs every second. Every target gets
    the label namespace=`namespace`, as Kubernetes service discovery gives each installation's targets."""

    def __init__(self, targets: dict[str, int], directory: Path, namespace: str) -> None:
        self.port = free_port()
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(ALERTS)],
            "scrape_configs": [
                {
                    "job_name": job,
                    "static_configs": [{"targets": [f"127.0.0.1:{port}"], "labels": {"namespace": namespace}}],
                }
                for job, port in targets.items()
            ],
        }
        self.config = directory / "prometheus.yml"
        self.config.write_text(yaml.safe_dump(config))
        self.data = directory / "tsdb"
        self.log = directory / "prometheus.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Prometheus:
        binary = require("prometheus")
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    binary,
                    f"--config.file={self.config}",
                    f"--storage.tsdb.path={self.data}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                ],
                stdout=log,
                stderr=log,
            )
        wait_until_sync(
            lambda: self.proc is not None and self.proc.poll() is None and http_status(f"{self.url}/-/ready") == 200,
            30,
            what=f"prometheus ready (log: {self.log})",
        )
        return self

    def stop(self) -> None:
        terminate(self.proc)


@pytest.fixture
async def stack() -> AsyncIterator[contextlib.AsyncExitStack]:
    async with contextlib.AsyncExitStack() as exit_stack:
        yield exit_stack


@pytest.fixture
def prometheus_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "prometheus"
    directory.mkdir()
    return directory


@pytest.fixture
def start_prometheus(prometheus_dir: Path, namespace: str) -> Iterator[Callable[[dict[str, int]], Prometheus]]:
    started: list[Prometheus] = []

    def start(targets: dict[str, int]) -> Prometheus:
        server = Prometheus(targets, prometheus_dir, namespace)
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def redis_exporter(tmp_path: Path) -> Iterator[int | None]:
    """Debian's redis_exporter reading the Redis the services use (INFO: nothing it does changes that Redis); its
    port, or None where the package is not installed (the Redis panels may then be empty)."""
    binary = shutil.which("prometheus-redis-exporter")
    if binary is None:
        yield None
        return
    port = free_port()
    with (tmp_path / "redis-exporter.log").open("ab") as log:
        proc = subprocess.Popen(
            [binary, "-redis.addr", REDIS_URL, "-web.listen-address", f"127.0.0.1:{port}"], stdout=log, stderr=log
        )
    try:
        wait_until_sync(
            lambda: proc.poll() is None and http_status(f"http://127.0.0.1:{port}/metrics") == 200,
            30,
            what="redis exporter",
        )
        yield port
    finally:
        proc.terminate()
        proc.wait(20)


@pytest.fixture
def broker(request: pytest.FixtureRequest) -> tuple[str | None, int | None]:
    """The session's private RabbitMQ node (its AMQP URL and rabbitmq_prometheus port), so the broker the services
    use is scraped too; (None, None) where no private node can run (not root, no rabbitmq-server): the services
    then use the shared broker, whose plugins are not a test's to enable, and the RabbitMQ panels may be empty."""
    try:
        node = request.getfixturevalue("rabbitmq_node")
    except pytest.skip.Exception:
        return None, None
    return node.url, node.prometheus_port


def port_of(env: dict[str, str], name: str) -> int:
    return parse_host_port(env[name]).port


def reject_unknown_recipient(env: dict[str, str]) -> None:
    with smtplib.SMTP("127.0.0.1", port_of(env, "POSTROOM_SMTP_LISTEN"), timeout=30) as smtp:
        smtp.ehlo("client.remote.test")
        smtp.mail("bob@remote.test")
        code, _ = smtp.rcpt("nobody@example.test")
        assert code == 550


def send_mail(env: dict[str, str]) -> None:
    with smtplib.SMTP("127.0.0.1", port_of(env, "POSTROOM_SMTP_LISTEN"), timeout=30) as smtp:
        smtp.ehlo("client.remote.test")
        for n in range(MESSAGES):
            message = f"From: bob@remote.test\r\nTo: alice@example.test\r\nSubject: metrics {n}\r\n\r\nHello.\r\n"
            smtp.sendmail("bob@remote.test", ["alice@example.test"], message)


async def admin_request(env: dict[str, str]) -> None:
    url = f"http://{env['POSTROOM_ADMIN_LISTEN']}/api/v1/domains"
    headers = {"Authorization": f"Bearer {env['POSTROOM_ADMIN_TOKEN']}"}
    async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as response:
        assert response.status == 200


def pop3_session(env: dict[str, str], password: str) -> int:
    """Log in; with the right password download and delete everything. Returns the number of messages seen."""
    pop = poplib.POP3("127.0.0.1", port_of(env, "POSTROOM_POP3_LISTEN"), timeout=30)
    try:
        pop.user("alice@example.test")
        try:
            pop.pass_(password)
        except poplib.error_proto:
            return -1
        count, _size = pop.stat()
        for n in range(1, count + 1):
            pop.retr(n)
            pop.dele(n)
        return int(count)
    finally:
        pop.quit()


async def query(session: aiohttp.ClientSession, prometheus: Prometheus, expr: str) -> dict[str, Any]:
    async with session.get(f"{prometheus.url}/api/v1/query", params={"query": expr}) as response:
        body: dict[str, Any] = await response.json()
    return body


def values(result: dict[str, Any]) -> list[float]:
    data = result["data"]
    if data["resultType"] == "scalar":
        return [float(data["result"][1])]
    return [float(sample["value"][1]) for sample in data["result"]]


async def test_prometheus_scrapes_every_service_and_runs_every_dashboard_query_and_alert(
    stack: contextlib.AsyncExitStack,
    store: Store,
    base_env: dict[str, str],
    start_service: Callable[..., ServiceProcess],
    start_prometheus: Callable[[dict[str, int]], Prometheus],
    redis_exporter: int | None,
    broker: tuple[str | None, int | None],
    namespace: str,
) -> None:
    amqp_url, broker_metrics = broker
    await store.accounts.add_domain("example.test")
    await store.accounts.add_user("alice@example.test", PASSWORD)
    # Faster store gauges and no POP3 failure delay, so the test waits on nothing but the traffic itself.
    fast = {"POSTROOM_STATS_INTERVAL": "1s", "POSTROOM_POP3_AUTH_FAILURE_DELAY": "0"}
    # A blocklist zone, so that the DNSBL panel has its series (made per configured zone, at zero: the test's
    # clients are on loopback, trusted, and never looked up).
    fast["POSTROOM_DNSBL_ZONES"] = "dnsbl.invalid"
    if amqp_url is not None:
        fast["POSTROOM_AMQP_URL"] = amqp_url
    services = {name: start_service(name, **fast) for name in SERVICES}
    jobs = {f"postroom-{name.replace('_', '-')}": service.metrics_port for name, service in services.items()}
    if redis_exporter is not None:
        jobs["redis"] = redis_exporter
    if broker_metrics is not None:
        jobs["rabbitmq"] = broker_metrics
    prometheus = start_prometheus(jobs)
    session = await stack.enter_async_context(aiohttp.ClientSession())

    async def holds(expr: str, timeout: float = 30) -> None:
        """Wait until `expr` has a result in Prometheus."""

        async def answered() -> bool:
            result = await query(session, prometheus, expr)
            return result["status"] == "success" and bool(result["data"]["result"])

        await wait_until(answered, timeout, interval=0.2, what=f"Prometheus: {expr}")

    # Prometheus discovers its targets a few seconds after start: traffic before the first scrape would be invisible.
    await holds(f'count(up{{job=~"postroom-.+"}} == 1) == {len(SERVICES)}')
    # Labelled series that the services create on first use appear with their first increment, which a rate cannot
    # see: make them exist first, so the traffic below shows as a rate like it would in a running installation.
    await asyncio.to_thread(reject_unknown_recipient, base_env)
    await admin_request(base_env)
    await holds("postroom_smtp_rejections_total")
    await holds("postroom_store_api_requests_total")

    await asyncio.to_thread(send_mail, base_env)
    await asyncio.to_thread(reject_unknown_recipient, base_env)

    async def stored() -> bool:
        return len(await store.mailboxes.snapshot("alice@example.test")) == MESSAGES

    await wait_until(stored, what="all messages delivered to alice")
    assert await asyncio.to_thread(pop3_session, base_env, "wrong password") == -1
    assert await asyncio.to_thread(pop3_session, base_env, PASSWORD) == MESSAGES
    await admin_request(base_env)

    # Rates need two scrapes after the traffic, of each target (Prometheus scrapes each on its own schedule, so one
    # target's second scrape says nothing of another's); the store gauges a refresh after the user was added.
    for expr in (
        # The ingress's own counter: its rejections rate below can already be positive from the rejection made
        # before the traffic, before any scrape has seen a message accepted.
        "sum(rate(postroom_smtp_messages_accepted_total[1m])) > 0",
        'sum(rate(postroom_delivery_attempts_total{outcome="delivered"}[1m])) > 0',
        f"sum(postroom_pop3_messages_deleted_total) >= {MESSAGES}",
        "sum(rate(postroom_pop3_messages_deleted_total[1m])) > 0",
        "sum(rate(postroom_smtp_rejections_total[1m])) > 0",
        "sum(rate(postroom_store_api_requests_total[1m])) > 0",
        "max(postroom_store_mailboxes) >= 1",
    ):
        await holds(expr)

    if redis_exporter is not None:
        # Two scrapes of the exporter, as the rate on the Redis panel needs (redis_up alone is one).
        await holds("sum(rate(redis_commands_processed_total[1m])) > 0")
    if broker_metrics is not None:
        await holds('up{job="rabbitmq"} == 1')
    failures = sorted(MUST_BE_POSITIVE - {q.name for q in dashboard_queries()})  # a renamed panel
    answered = []
    for q in dashboard_queries() + alert_queries():
        result = await query(session, prometheus, q.runnable())
        failures += check(q, result, redis_exporter is not None, broker_metrics is not None)
        if q.source == "dashboard" and result.get("status") == "success" and values(result):
            answered.append(q)
    assert failures == []
    # Each query shows this installation (its namespace, its targets) and nothing of another one.
    for q in answered:
        for other in (q.runnable(namespace="another-installation"), q.runnable(instance="10.9.9.9:9101")):
            result = await query(session, prometheus, other)
            assert result["status"] == "success" and values(result) == [], f"{q.name} is not scoped: {other}"
        assert values(await query(session, prometheus, q.runnable(namespace=namespace))), q.name
    assert len(answered) > 40

    exported = await query(session, prometheus, 'count by (__name__) ({__name__=~"postroom_.+"})')
    names = {sample["metric"]["__name__"] for sample in exported["data"]["result"]}
    assert metric_names() - names == set(), "metrics the dashboard or alerts read but no service exported"

    async with session.get(f"{prometheus.url}/api/v1/rules") as response:
        rules = [rule for group in (await response.json())["data"]["groups"] for rule in group["rules"]]
    assert len(rules) == len(alert_queries())
    assert [f"{r['name']}: {r.get('lastError')}" for r in rules if r["health"] != "ok"] == []
    assert [r["name"] for r in rules if r["state"] == "firing" and r["labels"].get("severity") == "critical"] == []


def check(q: NamedQuery, result: dict[str, Any], redis_scraped: bool, broker_scraped: bool) -> list[str]:
    """What is wrong with one query's answer: an error, no series for a dashboard panel, or no data after traffic."""
    if result.get("status") != "success":
        return [f"{q.source} {q.name}: {result.get('errorType')}: {result.get('error')}"]
    if q.source == "alert":
        return []  # alerts are quiet in a healthy system: an empty answer is the expected one
    # Without a private broker (or Debian's redis_exporter) those panels must evaluate, and may be empty.
    if ("rabbitmq_" in q.expr and not broker_scraped) or ("redis_" in q.expr and not redis_scraped):
        return []
    found = values(result)
    if not found:
        return [f"dashboard {q.name}: no series ({q.expr})"]
    if q.name in MUST_BE_POSITIVE and not any(math.isfinite(v) and v > 0 for v in found):
        return [f"dashboard {q.name}: no data after the traffic ({q.expr} -> {found})"]
    return []
