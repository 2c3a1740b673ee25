"""Circuit breakers on every path that reaches a store, transactions included.

"Fast" is measured by the calls that reach the store (counted by the fault wrapper around the
real adapter), never by time: an open circuit means the store sees no call at all.
"""

from __future__ import annotations

import pytest

from memsys import MemoryManager
from memsys.adapters import DuckDBMemoryAdapter, LMDBMemoryAdapter
from memsys.domain.errors import (
    CircuitBreakerOpenError,
    CommitIncompleteError,
    MemoryRetrievalError,
    StoreUnavailableError,
    TransactionAbortedError,
)
from memsys.resilience.circuit_breaker import CircuitBreaker, CircuitState
from memsys.testing import sample_item
from memsys.testing.port_faults import FaultPlan, wrap_store


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


#: The wrapper's port methods that reach the engine (begin_transaction, store inside a
#: transaction, transaction_ops and rollback only buffer in this process).
ENGINE_CALLS = {"prepare_ops", "apply_prepared", "flush", "retrieve", "retrieve_many", "search", "count",
                "iter_items", "snapshot"}


def reached(plan: FaultPlan) -> int:
    """Calls that reached the wrapped store's engine, as the fault wrapper counted them."""
    with plan._lock:
        return sum(n for (_, method), n in plan._calls.items() if method in ENGINE_CALLS)


@pytest.fixture
def setup(tmp_path):
    plan, clock = FaultPlan(seed=21), Clock()
    lmdb = wrap_store(LMDBMemoryAdapter(path=tmp_path / "lmdb"), plan, name="lmdb")
    manager = MemoryManager({"lmdb": lmdb, "duckdb": DuckDBMemoryAdapter(path=tmp_path / "items.duckdb")},
                            transaction_log=tmp_path / "txlog",
                            breakers={"lmdb": CircuitBreaker(2, 10.0, name="lmdb", clock=clock),
                                      "duckdb": {"failure_threshold": 5}})
    yield manager, plan, clock
    plan.heal()
    manager.close()


def test_an_open_breaker_fails_prepare_fast_and_the_transaction_writes_nothing(setup) -> None:
    manager, plan, clock = setup
    assert manager.breakers["duckdb"].failure_threshold == 5 and manager.breakers["lmdb"].failure_threshold == 2
    plan.add(method="prepare_ops", kind="transient")
    for i in range(2):  # two failures that reach lmdb open its circuit
        with pytest.raises(TransactionAbortedError) as failed:
            manager.store(sample_item(i))
        assert isinstance(failed.value.__cause__, StoreUnavailableError) and failed.value.store == "lmdb"
    assert manager.breakers["lmdb"].state is CircuitState.OPEN
    before = reached(plan)
    for i in range(2, 6):
        with pytest.raises(TransactionAbortedError, match="circuit breaker open") as fast:
            manager.store(sample_item(i))
        assert isinstance(fast.value.__cause__, CircuitBreakerOpenError) and fast.value.store == "lmdb"
        assert fast.value.transient  # worth re-running once the circuit closes
    assert reached(plan) == before, "a call reached a store whose circuit is open"
    assert all(manager.adapters["duckdb"].retrieve(f"item-{i:05d}") is None for i in range(6))
    stats = manager.stats(count_items=False)["stores"]["lmdb"]
    assert stats["breaker"]["state"] == "OPEN" and stats["operations"]["prepare"]["rejected"] == 4
    assert stats["operations"]["prepare"]["error"] == 2
    # Writes outside a transaction are transactions too: the same fast refusal.
    with pytest.raises(TransactionAbortedError, match="circuit breaker open"):
        manager.adapters["lmdb"].store(sample_item(9))
    assert reached(plan) == before
    # After the reset timeout, one probe reaches the store; its success closes the circuit.
    plan.heal()
    clock.now += 10.0
    manager.store(sample_item(7))
    assert manager.breakers["lmdb"].state is CircuitState.CLOSED and reached(plan) > before
    assert manager.adapters["lmdb"].retrieve("item-00007") is not None
    assert manager.breakers["duckdb"].state is CircuitState.CLOSED  # duckdb never failed


def test_failed_applies_open_the_breaker_and_recovery_is_not_hammered(setup) -> None:
    manager, plan, clock = setup
    plan.add(method="apply_prepared", kind="transient")
    for i in range(2):  # decided, then lmdb fails to apply (retried inside): one failure each
        with pytest.raises((CommitIncompleteError, TransactionAbortedError)):
            manager.store(sample_item(i))
    assert manager.breakers["lmdb"].state is CircuitState.OPEN and "lmdb" in manager.coordinator.quarantined
    before = reached(plan)
    for i in range(2, 5):  # no recovery attempt, no prepare: refused before any call
        with pytest.raises(TransactionAbortedError, match="waiting for recovery and has its circuit breaker open"):
            manager.store(sample_item(i), ["lmdb"])
    assert reached(plan) == before
    # The operator's explicit recovery is made whatever the circuit says; it completes lmdb and closes it.
    plan.heal()
    report = manager.recover()
    assert report.ok and manager.breakers["lmdb"].state is CircuitState.CLOSED
    assert manager.adapters["lmdb"].retrieve("item-00000") is not None
    manager.store(sample_item(8), ["lmdb"])


def test_reads_and_the_fallback_paths_pass_the_same_breaker(setup) -> None:
    manager, plan, clock = setup
    manager.store(sample_item(1))
    plan.add(method="retrieve", kind="permanent")
    assert manager.get_with_fallback("item-00001").id == "item-00001"  # lmdb fails, duckdb answers
    assert manager.retrieve("item-00001").id == "item-00001"
    assert manager.breakers["lmdb"].state is CircuitState.OPEN
    before = reached(plan)
    assert manager.get_with_cache("item-00001").id == "item-00001"
    assert manager.retrieve("item-00001").id == "item-00001"
    with pytest.raises(MemoryRetrievalError) as failed:
        manager.get_with_fallback("item-00001", stores=["lmdb"])
    assert isinstance(failed.value.errors["lmdb"], CircuitBreakerOpenError)
    assert reached(plan) == before


def test_caller_errors_do_not_trip_the_breaker(tmp_path) -> None:
    manager = MemoryManager({"lmdb": LMDBMemoryAdapter(path=tmp_path / "lmdb")}, transaction_log=tmp_path / "txlog",
                            failure_threshold=1)
    try:
        for _ in range(3):
            with pytest.raises(TransactionAbortedError, match="not an operation"):  # the caller's fault
                manager.coordinator.commit("t", 0, {"lmdb": ["not an operation"]})
        assert manager.breakers["lmdb"].state is CircuitState.CLOSED
        assert manager.stats(count_items=False)["stores"]["lmdb"]["operations"]["prepare"]["invalid"] == 3
        manager.store(sample_item(1))
        assert manager.adapters["lmdb"].retrieve("item-00001") is not None
    finally:
        manager.close()
