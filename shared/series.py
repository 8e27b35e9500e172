"""Labelled Prometheus series made at zero at start, so dashboards and alerts never see one missing."""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from typing import Any


def create_series(metric: Any, *values: Iterable[str]) -> None:
    """Create `metric`'s series for every combination of label values (one iterable per label, in label order)."""
    for labels in itertools.product(*values):
        metric.labels(*labels)
