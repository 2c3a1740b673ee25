"""Monitoring: stats(), Prometheus metrics, per-adapter DEBUG lines and OpenTelemetry spans show
every store call, failures injected by the fault wrapper included."""

from __future__ import annotations

import io
import logging
import urllib.request

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry, generate_latest

from memsys import MemoryManager
from memsys.adapters import DuckDBMemoryAdapter, LMDBMemoryAdapter
from memsys.domain.errors import TransactionAbortedError
from memsys.observability.prometheus import run_exporter, serve
from memsys.testing import sample_item
from memsys.testing.port_faults import FaultPlan, wrap_store


@pytest.fixture
def setup(tmp_path):
    plan = FaultPlan(seed=31)
    manager = MemoryManager({"lmdb": wrap_store(LMDBMemoryAdapter(path=tmp_path / "lmdb"), plan, name="lmdb"),
                             "duckdb": DuckDBMemoryAdapter(path=tmp_path / "items.duckdb")},
                            transaction_log=tmp_path / "txlog", fallback_store="duckdb",
                            reconciliation_queue=tmp_path / "queue", failure_threshold=2, reset_timeout=60)
    yield manager, plan
    plan.heal()
    manager.close()


class SyncQueue:  # what a SyncManager registers: a bound method reporting its depth
    def __init__(self, depth: int) -> None:
        self.depth = depth

    def queue_depth(self) -> int:
        return self.depth


def test_stats_report_items_latency_errors_breakers_and_queues(setup) -> None:
    manager, plan = setup
    for i in range(5):
        manager.store(sample_item(i))
    manager.store(sample_item(9), ["duckdb"])
    for i in range(5):
        manager.retrieve(f"item-{i:05d}")
    healthy = manager.stats()["stores"]
    assert (healthy["lmdb"]["items"], healthy["duckdb"]["items"]) == (5, 6)
    plan.add(method="prepare_ops", kind="transient", store="lmdb")
    for i in (10, 11, 12):  # lmdb fails twice (its circuit opens), then is refused: queued for reconciliation
        manager.store_with_degraded_mode(sample_item(i))
    queue = SyncQueue(4)
    manager.register_queue("sync", queue.queue_depth)
    stats = manager.stats()
    lmdb, duckdb = stats["stores"]["lmdb"], stats["stores"]["duckdb"]
    assert duckdb["items"] == 9 and lmdb["backend"] == "lmdb"
    assert lmdb["items"] is None and "circuit for lmdb is open" in lmdb["items_error"]  # not counted: not called
    assert lmdb["breaker"]["state"] == "OPEN" and duckdb["breaker"]["state"] == "CLOSED"
    prepare = lmdb["operations"]["prepare"]
    assert (prepare["ok"], prepare["error"], prepare["rejected"]) == (5, 2, 1)
    assert lmdb["operations"]["count"]["rejected"] == 1
    assert prepare["error_rate"] == pytest.approx(2 / 7) and lmdb["error_rate"] > 0 == duckdb["error_rate"]
    apply = duckdb["operations"]["apply"]
    assert apply["ok"] >= 6 and apply["latency"]["count"] == apply["calls"]
    assert apply["latency"]["buckets"][-1][1] == apply["calls"] and apply["latency"]["p99"] > 0
    assert lmdb["operations"]["retrieve"]["calls"] == 5
    assert stats["queues"] == {"sync": 4, "reconciliation": 3}
    assert stats["transactions"]["committed"] >= 9 and stats["transactions"]["aborted_circuit_open"] == 1
    del queue  # a SyncManager gone is a queue gone
    assert manager.queue_depths() == {"sync": 0, "reconciliation": 3}


def test_prometheus_metrics_in_the_callers_registry_and_served(setup) -> None:
    manager, plan = setup
    for i in range(3):
        manager.store(sample_item(i))
    plan.add(method="prepare_ops", kind="transient", store="lmdb", times=1)
    with pytest.raises(TransactionAbortedError):
        manager.store(sample_item(7))
    registry = CollectorRegistry()
    collector = manager.register_metrics(registry)
    value = registry.get_sample_value
    assert value("memsys_store_items", {"store": "lmdb"}) == 3
    assert value("memsys_store_calls_total", {"store": "lmdb", "operation": "prepare", "outcome": "ok"}) == 3
    assert value("memsys_store_calls_total", {"store": "lmdb", "operation": "prepare", "outcome": "error"}) == 1
    assert value("memsys_store_call_duration_seconds_count", {"store": "duckdb", "operation": "apply"}) == 3
    assert value("memsys_store_call_duration_seconds_bucket",
                 {"store": "duckdb", "operation": "apply", "le": "+Inf"}) == 3
    assert value("memsys_store_error_ratio", {"store": "lmdb"}) > 0
    assert value("memsys_breaker_state", {"store": "lmdb"}) == 0
    assert value("memsys_queue_depth", {"queue": "reconciliation"}) == 0
    assert value("memsys_coordinator_events_total", {"event": "committed"}) == 3
    registry.unregister(collector)
    server, thread = serve(manager, 0)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.server_port}/metrics", timeout=10) as response:
            text = response.read().decode()
    finally:
        server.shutdown()
    assert 'memsys_store_items{store="duckdb"} 3.0' in text and "memsys_breaker_opened_total" in text


def test_memsys_metrics_once_prints_the_metrics_of_store_specs(tmp_path, capsys) -> None:
    store = LMDBMemoryAdapter(path=tmp_path / "lmdb")
    store.store_many([sample_item(i) for i in range(4)])
    store.close()
    from memsys.cli import main

    assert main(["metrics", "--once", f"kv=lmdb:{tmp_path / 'lmdb'}"]) == 0
    out = capsys.readouterr()
    assert 'memsys_store_items{store="kv"} 4.0' in out.out and "without transaction_log" not in out.err
    assert main(["metrics", "--once", f"lmdb:{tmp_path / 'missing'}"]) == 2  # never creates a store
    assert not (tmp_path / "missing").exists()
    buffer = io.StringIO()
    assert run_exporter([f"lmdb:{tmp_path / 'lmdb'}"], once=True, out=buffer) == 0
    assert 'memsys_store_calls_total{operation="count",outcome="ok",store="lmdb"} 1.0' in buffer.getvalue()


def test_every_store_call_is_a_debug_line_on_its_adapters_logger(setup, caplog) -> None:
    manager, plan = setup
    with caplog.at_level(logging.INFO, logger="memsys"):
        for i in range(3):  # the hot path says nothing at INFO or above
            manager.store(sample_item(i))
            manager.retrieve(f"item-{i:05d}")
    assert caplog.records == []
    with caplog.at_level(logging.DEBUG, logger="memsys"):
        with manager.with_transaction(["lmdb", "duckdb"]) as tx:
            manager.adapters["lmdb"].store(sample_item(5))
            manager.adapters["duckdb"].store(sample_item(5))
        plan.add(method="prepare_ops", kind="transient", store="lmdb", times=1)
        with pytest.raises(TransactionAbortedError) as failed:
            manager.store(sample_item(6))
        manager.adapters["duckdb"].count()  # an adapter called directly logs its own line
    calls = [r for r in caplog.records if hasattr(r, "memsys_operation")]
    ours = {(r.name, r.memsys_store, r.memsys_operation, r.memsys_outcome) for r in calls
            if r.memsys_transaction_id == tx.transaction_id}
    assert ours == {("memsys.adapters.lmdb", "lmdb", "prepare", "ok"), ("memsys.adapters.lmdb", "lmdb", "apply", "ok"),
                    ("memsys.adapters.duckdb", "duckdb", "prepare", "ok"),
                    ("memsys.adapters.duckdb", "duckdb", "apply", "ok")}
    failed_id = failed.value.transaction_id
    failing = [r for r in calls if r.memsys_transaction_id == failed_id]
    assert [(r.memsys_store, r.memsys_operation, r.memsys_outcome) for r in failing] == [
        ("duckdb", "prepare", "ok"), ("lmdb", "prepare", "error")]  # stores prepare in name order
    assert "injected fault" in failing[1].getMessage() and "duration_ms=" in failing[1].getMessage()
    assert all(r.levelno == logging.DEBUG and r.memsys_duration >= 0 for r in calls)
    direct = [r for r in calls if r.memsys_operation == "count"]
    assert [(r.name, r.memsys_store, r.memsys_outcome) for r in direct] == [("memsys.adapters.duckdb", "duckdb", "ok")]
    # one line per call: the monitor's, never the adapter's too
    applies = [r for r in calls if r.memsys_operation == "apply" and r.memsys_transaction_id == tx.transaction_id]
    assert len(applies) == 2


_EXPORTER = InMemorySpanExporter()


@pytest.fixture(scope="module")
def spans():
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):  # the first module to set one wins; add to it then
        trace.set_tracer_provider(TracerProvider())
        provider = trace.get_tracer_provider()
    provider.add_span_processor(SimpleSpanProcessor(_EXPORTER))  # once: a provider cannot drop a processor
    yield _EXPORTER
    _EXPORTER.clear()


def test_apply_spans_are_children_of_their_transaction_and_reads_have_spans(tmp_path, spans) -> None:
    manager = MemoryManager({"lmdb": LMDBMemoryAdapter(path=tmp_path / "lmdb"),
                             "duckdb": DuckDBMemoryAdapter(path=tmp_path / "items.duckdb")},
                            transaction_log=tmp_path / "txlog")
    try:
        spans.clear()
        with manager.with_transaction(["lmdb", "duckdb"]) as tx:
            manager.adapters["lmdb"].store(sample_item(1))
            manager.adapters["duckdb"].store(sample_item(1))
            manager.retrieve("item-00001")  # inside the transaction: its id is on the read's spans
        manager.search({"memory_type": sample_item(1).memory_type.name})
    finally:
        manager.close()
    finished = [s for s in spans.get_finished_spans() if s.name.startswith("memsys.")]
    commit = next(s for s in finished if s.name == "memsys.transaction.commit")
    applies = [s for s in finished if s.name == "memsys.transaction.apply"]
    assert sorted(s.attributes["memsys.store"] for s in applies) == ["duckdb", "lmdb"]
    for child in applies + [s for s in finished if s.name in ("memsys.transaction.prepare", "memsys.transaction.log")]:
        assert child.parent is not None and child.parent.span_id == commit.context.span_id, child.name
        assert child.context.trace_id == commit.context.trace_id
    for span in finished:
        if span.name != "memsys.recovery" and span.name.startswith(("memsys.transaction", "memsys.store.retrieve")):
            assert span.attributes["memsys.transaction_id"] == tx.transaction_id, span.name
    reads = {s.name for s in finished}
    assert {"memsys.retrieve", "memsys.store.retrieve", "memsys.search", "memsys.store.search"} <= reads
    store_read = next(s for s in finished if s.name == "memsys.store.search")
    parent = next(s for s in finished if s.name == "memsys.search")
    assert store_read.parent.span_id == parent.context.span_id
