"""A broker resource alarm on a private RabbitMQ node (tests/rabbitmq_node.py): the ingress answers 451 at once
while the broker blocks its connection, 250 again once the alarm clears, and queues nothing it answered 451 at once."""

from __future__ import annotations

import smtplib
from collections.abc import Callable

from prometheus_client import REGISTRY

from services.smtp_ingress import replies
from tests.helpers import wait_until_sync
from tests.rabbitmq_node import RabbitMQNode
from tests.smtp_ingress.conftest import ALICE, RunningIngress, read_queue, send
from tests.smtp_ingress.test_path import queued_id

PUBLISH_TIMEOUT = 3.0
DURING_ALARM = 4


def failures(reason: str) -> float:
    return REGISTRY.get_sample_value("postroom_smtp_publish_failures_total", {"reason": reason}) or 0.0


def message(n: int) -> bytes:
    return f"From: sender@remote.example\r\nTo: {ALICE}\r\nSubject: alarm {n}\r\n\r\nNumber {n}.\r\n".encode()


def test_451_during_a_memory_alarm_and_250_after_it(
    rabbitmq_node: RabbitMQNode, make_ingress: Callable[..., RunningIngress], accounts: None, namespace: str
) -> None:
    """The first message of the alarm is written before the broker says it blocks us: it waits out the publish
    timeout (451) and the broker queues it when the alarm clears. Every later one is refused at once without a byte
    written, so none of them is queued; before, each waited out the timeout too and was queued anyway afterwards."""
    node = rabbitmq_node
    ingress = make_ingress(amqp_url=node.url, smtp_publish_timeout=PUBLISH_TIMEOUT)
    results: list[tuple[int, bytes]] = []
    with smtplib.SMTP("127.0.0.1", ingress.port("smtp"), timeout=PUBLISH_TIMEOUT * 10) as client:
        client.ehlo("client.example.org")
        results.append(send(client, "sender@remote.example", [ALICE], message(0)))
        assert results[0][0] == 250, results

        timeouts, blocked = failures("timeout"), failures("blocked")
        with node.memory_alarm():
            during = [send(client, "sender@remote.example", [ALICE], message(n)) for n in range(1, 1 + DURING_ALARM)]
            temporary = str(replies.TEMPORARY_FAILURE)
            assert [f"{code} {text.decode()}" for code, text in during] == [temporary] * DURING_ALARM
            assert ingress.ready(), "still serving: a 451 makes clients try again later, a closed port does not"
        assert failures("timeout") == timeouts + 1
        assert failures("blocked") == blocked + DURING_ALARM - 1
        results += during

        unblocked = ("postroom-smtp-ingress", "running")
        wait_until_sync(lambda: unblocked in node.connections(), 60, what="the node reading from the ingress again")

        def accepted_again() -> bool:  # connection.unblocked may still be on its way: a few tries at most
            results.append(send(client, "sender@remote.example", [ALICE], message(len(results))))
            return results[-1][0] == 250

        wait_until_sync(accepted_again, 30, what="250 once the alarm cleared")

    assert {code for code, _ in results} == {250, 451}
    confirmed = [queued_id(text) for code, text in results if code == 250]
    queued = [m.message_id for m in read_queue(namespace, count=100, timeout=5, url=node.url)]
    assert sorted(queued.count(queue_id) for queue_id in confirmed) == [1] * len(confirmed)
    # Besides the 250s, only the message written before the broker said it blocks us.
    assert len(queued) <= len(confirmed) + 1, f"{len(queued) - len(confirmed)} messages answered 451 were queued"
