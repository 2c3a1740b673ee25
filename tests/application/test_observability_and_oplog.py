"""Transaction tracing spans, the audit/replay operation log, and outside adapters as participants."""

from __future__ import annotations

import logging

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from memsys import MemoryManager
from memsys.adapters.lmdb_store import LMDBMemoryAdapter
from memsys.adapters.memory_store import InMemoryStore
from memsys.application.oplog import read_operations, replay
from memsys.observability.tracing import get_tracer
from memsys.testing import dump, sample_item
from tests.kit.jsonl_store import JsonlStore

_EXPORTER = InMemorySpanExporter()


@pytest.fixture(scope="module", autouse=True)
def tracing():
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(_EXPORTER))
    trace.set_tracer_provider(provider)
    yield


def test_every_transaction_phase_and_store_gets_a_span(tmp_path) -> None:
    _EXPORTER.clear()
    manager = MemoryManager({"a": InMemoryStore(dimension=8), "b": LMDBMemoryAdapter(path=tmp_path / "b")},
                            transaction_log=tmp_path / "txlog")
    manager.coordinator.tracer = get_tracer()
    with manager.with_transaction(["a", "b"]) as tx:
        manager.adapters["a"].store(sample_item(1))
        manager.adapters["b"].store(sample_item(2))
    manager.close()
    spans = _EXPORTER.get_finished_spans()
    names = [s.name for s in spans]
    for name in ("memsys.transaction.commit", "memsys.transaction.prepare", "memsys.transaction.log",
                 "memsys.transaction.apply"):
        assert name in names
    commit = next(s for s in spans if s.name == "memsys.transaction.commit"
                  and s.attributes["memsys.transaction_id"] == tx.transaction_id)
    assert commit.attributes["memsys.lsn"] == tx.lsn and list(commit.attributes["memsys.stores"]) == ["a", "b"]
    applies = {s.attributes["memsys.store"] for s in spans if s.name == "memsys.transaction.apply"}
    assert applies == {"a", "b"}


def test_log_lines_carry_the_transaction_id(tmp_path, caplog) -> None:
    manager = MemoryManager({"a": InMemoryStore(dimension=8)}, transaction_log=tmp_path / "txlog")
    with caplog.at_level(logging.DEBUG, logger="memsys.transactions"):
        with manager.with_transaction(["a"]) as tx:
            manager.adapters["a"].store(sample_item(1))
    manager.close()
    assert any(tx.transaction_id in r.getMessage() for r in caplog.records)


def test_the_operation_log_replays_into_fresh_stores(tmp_path) -> None:
    manager = MemoryManager({"a": InMemoryStore(dimension=8), "b": InMemoryStore(dimension=8)},
                            transaction_log=tmp_path / "txlog", operation_log=tmp_path / "ops.jsonl")
    for i in range(6):
        manager.store(sample_item(i))
    manager.delete("item-00002")
    with manager.with_transaction(["a"]):
        manager.adapters["a"].store(sample_item(9))
    expected = {n: dump(a) for n, a in manager.adapters.items()}
    records = list(read_operations(tmp_path / "ops.jsonl"))
    assert len(records) == 8 and [r["lsn"] for r in records] == sorted(r["lsn"] for r in records)
    manager.close()
    fresh = {"a": InMemoryStore(dimension=8), "b": InMemoryStore(dimension=8)}
    assert replay(tmp_path / "ops.jsonl", fresh) == 8
    assert {n: dump(a) for n, a in fresh.items()} == expected
    partial = {"a": InMemoryStore(dimension=8)}
    replay(tmp_path / "ops.jsonl", partial, until_lsn=records[2]["lsn"], only=["a"])
    assert sorted(dump(partial["a"])) == ["item-00000", "item-00001", "item-00002"]


def test_an_outside_adapter_takes_part_in_transactions(tmp_path) -> None:
    outside = JsonlStore(str(tmp_path / "outside.jsonl"))
    manager = MemoryManager({"ours": LMDBMemoryAdapter(path=tmp_path / "lmdb"), "outside": outside},
                            transaction_log=tmp_path / "txlog")
    with pytest.raises(RuntimeError):
        with manager.with_transaction(["ours", "outside"]):
            manager.adapters["outside"].store(sample_item(1))
            assert manager.adapters["outside"].retrieve("item-00001") is not None
            raise RuntimeError("roll back")
    assert outside.retrieve("item-00001") is None
    manager.store(sample_item(2))
    assert outside.retrieve("item-00002").version > 1
    manager.close()
