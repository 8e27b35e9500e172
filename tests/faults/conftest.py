"""Fixtures of the fault scenarios: one stack for the whole package (starting processes is the slow part), healed
after every test, and a ledger per test."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import _cleanup_amqp, _cleanup_redis
from tests.faults.ledger import Ledger
from tests.faults.stack import FaultStack


@pytest.fixture(scope="package")
def fault_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultStack]:
    namespace = f"t{uuid.uuid4().hex[:12]}"
    log_dir: Path = tmp_path_factory.mktemp("fault-stack")
    stack = FaultStack(namespace, log_dir)
    try:
        stack.start()
        yield stack
    finally:
        stack.stop()
        _cleanup_redis(namespace)
        _cleanup_amqp(namespace)


@pytest.fixture
def stack(fault_stack: FaultStack) -> Iterator[FaultStack]:
    """The package's stack, healed (proxies passing, services ready) after the test, whatever it did."""
    fault_stack.mark()
    yield fault_stack
    for name, service in list(fault_stack.services.items()):
        if not service.alive():
            fault_stack.start_service(name)
    fault_stack.heal()


@pytest.fixture
def ledger() -> Ledger:
    return Ledger()
