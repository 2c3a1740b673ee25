"""Crashes at every step of the protocol, simulated in-process, then recovery on reopen."""

from __future__ import annotations

import pytest

from memsys import MemoryManager
from memsys.application.transactions import STEPS
from memsys.application.txlog import CoordinatorLog
from memsys.testing import dump, sample_item
from memsys.testing.crash import SimulatedCrash, abandon, crash_at
from tests.application.conftest import open_stores


@pytest.mark.parametrize("step", STEPS)
def test_a_crash_at_any_step_leaves_all_or_nothing_after_recovery(tmp_path, step) -> None:
    manager = MemoryManager(open_stores(tmp_path), transaction_log=tmp_path / "txlog")
    manager.store(sample_item(0))
    crash_at(manager, step)
    with pytest.raises(SimulatedCrash):
        manager.store(sample_item(1))
    abandon(manager)
    reopened = MemoryManager(open_stores(tmp_path), transaction_log=tmp_path / "txlog")
    try:
        present = {name: "item-00001" in dump(a) for name, a in reopened.adapters.items()}
        assert len(set(present.values())) == 1, f"crash {step}: partial {present}"
        decided = STEPS.index(step) >= STEPS.index("after_log_sync")
        assert all(present.values()) == decided
        assert all("item-00000" in dump(a) for a in reopened.adapters.values())
        report = reopened.last_recovery
        if decided:
            assert "item-00001" not in report.undone and report.redone
        if step in ("after_prepare", "after_log_write"):
            assert len(report.undone) == (1 if step == "after_log_write" else 0)
    finally:
        reopened.close()


def test_recovery_redoes_in_lsn_order_so_the_newest_write_wins(tmp_path) -> None:
    manager = MemoryManager(open_stores(tmp_path), transaction_log=tmp_path / "txlog")
    for version in range(5):
        manager.store(sample_item(1, content=f"v{version}"), ["lmdb", "tinydb"])
    crash_at(manager, "after_log_sync")
    with pytest.raises(SimulatedCrash):
        manager.store(sample_item(1, content="v5"), ["lmdb", "tinydb"])
    abandon(manager)
    reopened = MemoryManager(open_stores(tmp_path), transaction_log=tmp_path / "txlog")
    try:
        assert len(reopened.last_recovery.redone) == 6
        assert {a.retrieve("item-00001").content for n, a in reopened.adapters.items() if n != "duckdb"} == {"v5"}
    finally:
        reopened.close()


def test_a_torn_last_record_is_ignored(tmp_path) -> None:
    manager = MemoryManager(open_stores(tmp_path), transaction_log=tmp_path / "txlog")
    manager.store(sample_item(1))
    abandon(manager)
    with open(tmp_path / "txlog", "ab") as f:
        f.write(b"\x99\x00\x00\x00\x12\x34")  # a crash in the middle of appending
    reopened = MemoryManager(open_stores(tmp_path), transaction_log=tmp_path / "txlog")
    try:
        assert reopened.last_recovery.ok and len(reopened.last_recovery.redone) == 1
        reopened.store(sample_item(2))
    finally:
        reopened.close()


def test_a_log_holding_writes_for_a_missing_store_is_reported_not_dropped(tmp_path) -> None:
    manager = MemoryManager(open_stores(tmp_path), transaction_log=tmp_path / "txlog")
    manager.store(sample_item(1))
    abandon(manager)
    stores = open_stores(tmp_path)
    stores.pop("tinydb").close()
    reopened = MemoryManager(stores, transaction_log=tmp_path / "txlog")
    try:
        assert "tinydb" in reopened.last_recovery.failed_stores
        assert CoordinatorLog(tmp_path / "txlog").scan().commits, "the log was compacted over unapplied writes"
    finally:
        reopened.close()


def test_recovery_time_with_thousands_of_log_records(tmp_path) -> None:
    manager = MemoryManager(open_stores(tmp_path), transaction_log=tmp_path / "txlog", compact_records=10**9)
    for i in range(1500):
        manager.store(sample_item(i), ["lmdb", "duckdb"])
    abandon(manager)
    reopened = MemoryManager(open_stores(tmp_path), transaction_log=tmp_path / "txlog")
    try:
        report = reopened.last_recovery
        assert len(report.redone) == 1500 and report.log_records >= 3000 and report.seconds > 0
        assert len(dump(reopened.adapters["duckdb"])) == 1500
    finally:
        reopened.close()
