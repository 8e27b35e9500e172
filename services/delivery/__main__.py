"""`python -m services.delivery`: the delivery service under the shared runner (shared/service.py)."""

from __future__ import annotations

from services.delivery import metrics
from services.delivery.app import DeliveryApp
from services.delivery.config import DeliverySettings
from services.delivery.depth import queue_labels
from shared.service import Service, run
from shared.topology import Topology


def _metrics(settings: DeliverySettings) -> None:
    metrics.init_series(list(queue_labels(Topology(settings.namespace), settings.retry_schedule)))


SERVICE = Service(name="delivery", settings=DeliverySettings, app=DeliveryApp, metrics=_metrics)

if __name__ == "__main__":
    run(SERVICE)
