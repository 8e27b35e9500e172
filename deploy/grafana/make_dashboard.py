"""Write the Postroom Grafana dashboard from the panel list below: dashboards/postroom.json (compose provisions it)
and its copy in deploy/kubernetes/base/dashboards (a ConfigMap for Grafana's dashboard sidecar).

Every series selector of every query is scoped by the `namespace` and `instance` variables (`scope` adds them), so
two installations scraped by one Prometheus never mix on the dashboard."""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
TARGETS = (HERE / "dashboards" / "postroom.json", HERE.parent / "kubernetes" / "base" / "dashboards" / "postroom.json")
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
# The label matchers every selector gets: the installation's namespace (the label Kubernetes service discovery sets;
# absent in compose, where ".*", the "All" value, matches it) and the chosen scrape targets.
SCOPE = 'namespace=~"$namespace", instance=~"$instance"'
# A series selector: a metric name the dashboard reads, with or without its own {matchers}. The look-behind keeps
# label values ("postroom-.+", "incoming") and function names out.
SELECTOR = re.compile(r'(?<![\w"$.:-])((?:postroom|redis|rabbitmq)_[a-z0-9_]+|up)(?![\w(])(\{[^}]*\})?')
# The scrape jobs of one installation: the four services and, where scraped, its Redis exporter and RabbitMQ.
JOBS = "postroom-.+|redis|rabbitmq"
RATE = "$__rate_interval"
UP = 'up{job=~"postroom-.+"}'
WIDTH = 24


@dataclass
class Query:
    expr: str
    legend: str = ""


@dataclass
class Panel:
    title: str
    queries: list[Query]
    description: str = ""
    kind: str = "timeseries"
    unit: str = "short"
    width: int = 8
    height: int = 8
    # Stat panels: a value at or above `red_from` is shown red (dead letters, failures).
    red_from: float | None = None
    stack: bool = False


@dataclass
class Row:
    title: str
    panels: list[Panel] = field(default_factory=list)


def scope(expr: str) -> str:
    """`expr` with the namespace and instance matchers added to every series selector."""

    def add(match: re.Match[str]) -> str:
        own = match.group(2)
        matchers = f"{own[1:-1]}, {SCOPE}" if own and own != "{}" else SCOPE
        return f"{match.group(1)}{{{matchers}}}"

    return SELECTOR.sub(add, expr)


def quantiles(metric: str, selector: str = "", qs: tuple[float, ...] = (0.5, 0.9, 0.99)) -> list[Query]:
    return [
        Query(f"histogram_quantile({q}, sum by (le) (rate({metric}_bucket{selector}[{RATE}])))", f"p{round(q * 100)}")
        for q in qs
    ]


ROWS = [
    Row(
        "Overview",
        [
            Panel(
                "Accepted / min",
                [Query("sum(rate(postroom_smtp_messages_accepted_total[5m])) * 60")],
                "Messages answered 250 by the SMTP ingress (after RabbitMQ confirmed them).",
                kind="stat",
                width=4,
                height=4,
            ),
            Panel(
                "Delivered / min",
                [Query('sum(rate(postroom_delivery_attempts_total{outcome="delivered"}[5m])) * 60')],
                "Recipients delivered, locally or by relay.",
                kind="stat",
                width=4,
                height=4,
            ),
            Panel(
                "Work queue",
                [Query('max(postroom_delivery_queue_depth_messages{queue="incoming"})')],
                "Messages ready in the incoming queue.",
                kind="stat",
                width=4,
                height=4,
            ),
            Panel(
                "Dead letters",
                [Query('max(postroom_delivery_queue_depth_messages{queue="dead"})')],
                "Poison messages set aside: see `postroom queue dead list`.",
                kind="stat",
                width=4,
                height=4,
                red_from=1,
            ),
            Panel(
                "Open sessions",
                [
                    Query("sum(postroom_smtp_sessions_active)", "SMTP"),
                    Query("sum(postroom_pop3_sessions_active)", "POP3"),
                ],
                kind="stat",
                width=4,
                height=4,
            ),
            Panel(
                "Instances up",
                [Query(f"sum by (job) ({UP})", "{{job}}")],
                "Scraped instances answering, per service.",
                kind="stat",
                width=4,
                height=4,
            ),
        ],
    ),
    Row(
        "Traffic: SMTP ingress",
        [
            Panel(
                "Messages accepted",
                [Query(f"sum by (listener) (rate(postroom_smtp_messages_accepted_total[{RATE}]))", "{{listener}}")],
                "Per second, by listener (smtp 25, submission 587, smtps 465).",
                unit="short",
            ),
            Panel(
                "Connections",
                [
                    Query(
                        f"sum by (listener, result) (rate(postroom_smtp_connections_total[{RATE}]))",
                        "{{listener}} {{result}}",
                    )
                ],
                "New connections per second; result limit/shutdown means refused by a cap or during shutdown.",
            ),
            Panel(
                "Active SMTP sessions",
                [Query("sum by (listener) (postroom_smtp_sessions_active)", "{{listener}}")],
            ),
            Panel(
                "Rejections",
                [Query(f"sum by (stage, code) (rate(postroom_smtp_rejections_total[{RATE}]))", "{{stage}} {{code}}")],
                "4xx and 5xx replies per second, by session stage and reply code.",
            ),
            Panel(
                "Publish confirm latency",
                quantiles("postroom_smtp_publish_confirm_seconds"),
                "Time RabbitMQ takes to confirm a message; every 250 waits for it.",
                unit="s",
            ),
            Panel(
                "Publish failures (answered 451) and broker connection",
                [
                    Query(f"sum by (reason) (rate(postroom_smtp_publish_failures_total[{RATE}]))", "{{reason}}"),
                    Query("sum(postroom_smtp_broker_connected)", "ingresses connected"),
                ],
            ),
            Panel(
                "Accepted message size",
                quantiles("postroom_smtp_message_size_bytes", qs=(0.5, 0.95)),
                unit="bytes",
            ),
            Panel(
                "Inbound authentication results (port 25)",
                [
                    Query(
                        f"sum by (method, result) (rate(postroom_smtp_auth_results_total[{RATE}]))",
                        "{{method}} {{result}}",
                    )
                ],
                "SPF, DKIM, DMARC and ARC results per second, as written in Authentication-Results:. A rise of "
                "temperror means the checks' DNS fails; dmarc fail with p=reject is refused with 550.",
            ),
        ],
    ),
    Row(
        "Queue and delivery",
        [
            Panel(
                "Queue depth",
                [Query("max by (queue) (postroom_delivery_queue_depth_messages)", "{{queue}}")],
                "Messages ready per queue: incoming (work), delay.* (waiting for a retry), dead (poison).",
            ),
            Panel(
                "Queued messages by state",
                [Query("max by (state) (postroom_queue_messages)", "{{state}}")],
                "Messages not yet finished, from the queue index (`postroom queue list`): deferred (waiting for a"
                " retry), active (being retried), held (by the operator), dead (dead-lettered), deleted (a bounce"
                " on its way).",
                stack=True,
            ),
            Panel(
                "Delivery outcomes",
                [
                    Query(
                        f"sum by (transport, outcome) (rate(postroom_delivery_attempts_total[{RATE}]))",
                        "{{transport}} {{outcome}}",
                    )
                ],
                "Recipient delivery attempts per second: local store or SMTP relay; delivered, deferred, bounced.",
                stack=True,
            ),
            Panel(
                "Accept → delivery latency",
                quantiles("postroom_delivery_delay_seconds", '{outcome="delivered"}'),
                "From the ingress's 250 to the recipient's final delivery, retries included.",
                unit="s",
            ),
            Panel(
                "Delivery failure ratio",
                [
                    Query(
                        f'sum(rate(postroom_delivery_attempts_total{{outcome!="delivered"}}[{RATE}]))'
                        f" / sum(rate(postroom_delivery_attempts_total[{RATE}]))",
                        "deferred or bounced",
                    )
                ],
                unit="percentunit",
            ),
            Panel(
                "Queue messages handled",
                [Query(f"sum by (result) (rate(postroom_delivery_messages_total[{RATE}]))", "{{result}}")],
                "Per second: done, deferred (to a retry queue), requeued, dead-lettered.",
            ),
            Panel(
                "Bounces, delay and success notices, dead letters",
                [
                    Query(f"sum(rate(postroom_delivery_bounces_total[{RATE}]))", "bounces sent"),
                    Query(f"sum(rate(postroom_delivery_bounces_suppressed_total[{RATE}]))", "bounces suppressed"),
                    Query(f"sum(rate(postroom_delivery_delay_notices_total[{RATE}]))", "delay notices"),
                    Query(
                        f"sum by (action) (rate(postroom_delivery_success_notices_total[{RATE}]))",
                        "success notices ({{action}})",
                    ),
                    Query(f"sum(rate(postroom_delivery_dead_letters_total[{RATE}]))", "dead-lettered"),
                ],
            ),
            Panel(
                "DKIM signatures",
                [
                    Query(
                        f"sum by (result) (rate(postroom_delivery_dkim_signatures_total[{RATE}]))",
                        "{{result}}",
                    )
                ],
                "Relayed messages per second: signed, failed (sent unsigned: see the delivery log), skipped (not from "
                "a local domain with keys, or not ours to vouch for).",
                stack=True,
            ),
            Panel(
                "DNS lookups",
                [
                    Query(
                        f"sum by (rtype, result) (rate(postroom_delivery_dns_lookups_total[{RATE}]))",
                        "{{rtype}} {{result}}",
                    )
                ],
            ),
            Panel(
                "Outbound TLS policies (MTA-STS, DANE)",
                [
                    Query(
                        f"sum by (policy, result) (rate(postroom_delivery_tls_policy_total[{RATE}]))",
                        "{{policy}} {{result}}",
                    )
                ],
            ),
            Panel(
                "Workers",
                [
                    Query("sum(postroom_delivery_in_flight_messages)", "messages in flight"),
                    Query("sum(postroom_delivery_consumer_up)", "consumers running"),
                    Query("sum(postroom_delivery_spooled_messages)", "large messages waiting on disk"),
                ],
            ),
            Panel(
                "Large messages waiting in memory",
                [Query("sum(postroom_delivery_waiting_body_bytes)", "bodies over 1 MiB waiting for a worker")],
                "Held in memory up to POSTROOM_DELIVERY_MEMORY_BUDGET per worker; beyond it they wait in spool files.",
                unit="bytes",
            ),
        ],
    ),
    Row(
        "POP3",
        [
            Panel(
                "POP3 sessions",
                [
                    Query("sum(postroom_pop3_sessions_active)", "open"),
                    Query(f"sum by (listener) (rate(postroom_pop3_connections_total[{RATE}]))", "new/s {{listener}}"),
                    Query(f"sum(rate(postroom_pop3_connections_refused_total[{RATE}]))", "refused/s by the caps"),
                ],
            ),
            Panel(
                "Commands",
                [
                    Query(
                        f"sum by (command, result) (rate(postroom_pop3_commands_total[{RATE}]))",
                        "{{command}} {{result}}",
                    )
                ],
            ),
            Panel(
                "Messages retrieved and deleted",
                [
                    Query(f"sum(rate(postroom_pop3_messages_retrieved_total[{RATE}]))", "retrieved"),
                    Query(f"sum(rate(postroom_pop3_messages_deleted_total[{RATE}]))", "deleted"),
                ],
            ),
            Panel(
                "Bytes sent",
                [Query(f"sum(rate(postroom_pop3_sent_bytes_total[{RATE}]))", "sent")],
                unit="Bps",
            ),
            Panel(
                "Sessions closed",
                [
                    Query(f"sum by (reason) (rate(postroom_pop3_sessions_closed_total[{RATE}]))", "{{reason}}"),
                    Query(f"sum(rate(postroom_pop3_lock_conflicts_total[{RATE}]))", "maildrop in use"),
                    Query(f"sum(rate(postroom_pop3_stls_total[{RATE}]))", "STLS"),
                ],
            ),
        ],
    ),
    Row(
        "Security",
        [
            Panel(
                "Authentication failures",
                [
                    Query(
                        f"sum by (mechanism) (rate(postroom_smtp_auth_failures_total[{RATE}]))", "SMTP {{mechanism}}"
                    ),
                    Query(
                        f"sum by (mechanism) (rate(postroom_pop3_auth_failures_total[{RATE}]))", "POP3 {{mechanism}}"
                    ),
                ],
                "Failed logins per second; a sustained rate is password guessing.",
                width=12,
            ),
            Panel(
                "Permanent rejections by code",
                [
                    Query(
                        f'sum by (code) (rate(postroom_smtp_rejections_total{{code=~"5.."}}[{RATE}]))',
                        "{{code}}",
                    )
                ],
                "550 unknown user, 554 relay denied, 553 sender not owned, 552 too big, 501 bad syntax.",
                width=12,
            ),
        ],
    ),
    Row(
        "Limits, blocklists and the content filter",
        [
            Panel(
                "Rate limits hit",
                [
                    Query(f"sum by (limit) (rate(postroom_smtp_limit_hits_total[{RATE}]))", "{{limit}}"),
                    Query(f"sum by (limit) (rate(postroom_smtp_limit_errors_total[{RATE}]))", "unchecked {{limit}}"),
                ],
                "451 4.7.1 answers per second by limit: an account's send limit (messages, recipients), the port 25 "
                "connection rate per client; unchecked: Redis could not count and the limit was not applied.",
            ),
            Panel(
                "DNS blocklists",
                [Query(f"sum by (zone, result) (rate(postroom_smtp_dnsbl_total[{RATE}]))", "{{zone}} {{result}}")],
                "Answers per second by zone: listed (554 at MAIL), clean, refused (127.255.255.x: the zone refuses "
                "our resolver) and error (timeout, SERVFAIL).",
            ),
            Panel(
                "Content filter actions",
                [Query(f"sum by (action) (rate(postroom_smtp_filter_actions_total[{RATE}]))", "{{action}}")],
                "rspamd's verdicts per second; error: rspamd could not be asked (451, or accepted unfiltered).",
                stack=True,
            ),
        ],
    ),
    Row(
        "Storage",
        [
            Panel("Domains", [Query("max(postroom_store_domains)")], kind="stat", width=6, height=4),
            Panel("Mailboxes", [Query("max(postroom_store_mailboxes)")], kind="stat", width=6, height=4),
            Panel("Messages stored", [Query("max(postroom_store_messages)")], kind="stat", width=6, height=4),
            Panel(
                "Bytes stored",
                [Query("max(postroom_store_stored_bytes)")],
                kind="stat",
                unit="bytes",
                width=6,
                height=4,
            ),
            Panel(
                "Stored messages",
                [Query("max(postroom_store_messages)", "messages")],
                "All mailboxes together, refreshed by the store every POSTROOM_STATS_INTERVAL.",
            ),
            Panel("Stored bytes", [Query("max(postroom_store_stored_bytes)", "bytes")], unit="bytes"),
            Panel(
                "Store service",
                [
                    Query(f"max(rate(postroom_store_trace_events_total[{RATE}]))", "trace events/s"),
                    Query(f"sum by (status) (rate(postroom_store_api_requests_total[{RATE}]))", "admin API {{status}}"),
                    Query(f"sum(rate(postroom_store_stats_refresh_failures_total[{RATE}]))", "stats refresh failures"),
                ],
            ),
        ],
    ),
    Row(
        "Backends: Redis and RabbitMQ",
        [
            Panel(
                "Redis memory",
                [
                    Query("max by (instance) (redis_memory_used_bytes)", "used {{instance}}"),
                    Query("max by (instance) (redis_memory_max_bytes)", "maxmemory {{instance}}"),
                ],
                "Every mailbox lives here. At maxmemory (noeviction) Redis refuses writes: local mail is deferred.",
                unit="bytes",
            ),
            Panel(
                "Redis: time since the last snapshot",
                [Query("time() - max by (instance) (redis_rdb_last_save_timestamp_seconds)", "{{instance}}")],
                "The RDB snapshot the save points write (with the AOF beside it).",
                unit="s",
            ),
            Panel(
                "Redis clients and commands",
                [
                    Query("sum(redis_connected_clients)", "clients"),
                    Query(f"sum(rate(redis_commands_processed_total[{RATE}]))", "commands/s"),
                ],
            ),
            Panel(
                "RabbitMQ resource alarms",
                [
                    Query("max(rabbitmq_alarms_memory_used_watermark)", "memory"),
                    Query("max(rabbitmq_alarms_free_disk_space_watermark)", "disk"),
                ],
                "1 while the broker blocks publishers (the SMTP ingress answers 451).",
                kind="stat",
                red_from=1,
            ),
            Panel(
                "RabbitMQ memory and disk",
                [
                    Query("max by (instance) (rabbitmq_process_resident_memory_bytes)", "memory {{instance}}"),
                    Query("max by (instance) (rabbitmq_resident_memory_limit_bytes)", "memory alarm at"),
                    Query("min by (instance) (rabbitmq_disk_space_available_bytes)", "free disk {{instance}}"),
                    Query("max by (instance) (rabbitmq_disk_space_available_limit_bytes)", "disk alarm below"),
                ],
                unit="bytes",
            ),
            Panel(
                "RabbitMQ messages",
                [
                    Query("sum(rabbitmq_queue_messages_ready)", "ready"),
                    Query("sum(rabbitmq_queue_messages_unacked)", "unacknowledged"),
                ],
                "All queues of the broker, as it counts them.",
            ),
        ],
    ),
    Row(
        "Availability",
        [Panel("Instances up", [Query(f"sum by (job) ({UP})", "{{job}}")], width=24, height=6)],
    ),
]


def panel_json(panel: Panel, panel_id: int, x: int, y: int) -> dict[str, Any]:
    targets = [
        {"datasource": DATASOURCE, "expr": scope(q.expr), "legendFormat": q.legend, "refId": chr(ord("A") + i)}
        for i, q in enumerate(panel.queries)
    ]
    thresholds: list[dict[str, Any]] = [{"color": "green", "value": None}]
    if panel.red_from is not None:
        thresholds.append({"color": "red", "value": panel.red_from})
    defaults: dict[str, Any] = {"unit": panel.unit, "thresholds": {"mode": "absolute", "steps": thresholds}}
    options: dict[str, Any]
    if panel.kind == "stat":
        options = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}, "colorMode": "value"}
    else:
        defaults["custom"] = {"fillOpacity": 10, "stacking": {"mode": "normal" if panel.stack else "none"}}
        options = {"legend": {"displayMode": "list", "placement": "bottom"}, "tooltip": {"mode": "multi"}}
    return {
        "id": panel_id,
        "type": panel.kind,
        "title": panel.title,
        "description": panel.description,
        "datasource": DATASOURCE,
        "gridPos": {"h": panel.height, "w": panel.width, "x": x, "y": y},
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": options,
        "targets": targets,
    }


def layout(rows: list[Row]) -> list[dict[str, Any]]:
    """Rows one under another; panels fill each line left to right, 24 grid units wide."""
    panels: list[dict[str, Any]] = []
    y = 0
    next_id = 1
    for row in rows:
        panels.append(
            {
                "id": next_id,
                "type": "row",
                "title": row.title,
                "collapsed": False,
                "gridPos": {"h": 1, "w": WIDTH, "x": 0, "y": y},
            }
        )
        next_id += 1
        y += 1
        x, line_height = 0, 0
        for panel in row.panels:
            if x + panel.width > WIDTH:
                x, y, line_height = 0, y + line_height, 0
            panels.append(panel_json(panel, next_id, x, y))
            next_id += 1
            x += panel.width
            line_height = max(line_height, panel.height)
        y += line_height
    return panels


def label_variable(name: str, label: str, selector: str, multi: bool) -> dict[str, Any]:
    """A variable listing the values of a label; "All" is the regex .* (it also matches series without the label,
    as in compose, where no target has a namespace)."""
    query = f"label_values({selector}, {name})"
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": DATASOURCE,
        "query": {"query": query, "refId": f"{name}-values"},
        "definition": query,
        "includeAll": True,
        "allValue": ".*",
        "multi": multi,
        "current": {"selected": True, "text": "All", "value": "$__all"},
        "refresh": 2,
        "sort": 1,
        "hide": 0,
        "regex": "",
    }


def dashboard() -> dict[str, Any]:
    return {
        "uid": "postroom",
        "title": "Postroom",
        "description": "SMTP traffic, queue, delivery, POP3, security and storage of a Postroom installation.",
        "tags": ["postroom", "mail"],
        "editable": True,
        "graphTooltip": 1,
        "refresh": "30s",
        "schemaVersion": 39,
        "version": 1,
        "time": {"from": "now-6h", "to": "now"},
        "timezone": "",
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Prometheus",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {},
                    "hide": 0,
                    "refresh": 1,
                    "regex": "",
                },
                label_variable("namespace", "Namespace", f'up{{job=~"{JOBS}"}}', multi=False),
                label_variable("instance", "Instance", f'up{{job=~"{JOBS}", namespace=~"$namespace"}}', multi=True),
            ]
        },
        "annotations": {"list": []},
        "panels": layout(ROWS),
    }


def render() -> str:
    return json.dumps(dashboard(), indent=2, ensure_ascii=False) + "\n"


def main() -> int:
    text = render()
    for target in TARGETS:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        print(f"wrote {target}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
