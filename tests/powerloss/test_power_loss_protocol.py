"""Power failures at the points of the protocol where durability is decided: in the middle of
cross-store commits (at every protocol step), right after and in the middle of log compaction,
and in the middle of and right after recovery.

The stores run unsynced (``sync=False``): the coordinator log is what makes a commit durable, so
every power failure loses their unsynced pages and recovery must redo from the log. Every run is
judged with the set and all-or-nothing checker (memsys.testing.history.check_transactions):
acknowledged transactions present on all their stores, none partial, none that failed present.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
from collections.abc import Callable
from typing import Any

import pytest

from memsys import MemoryManager
from memsys.adapters.duckdb_store import DuckDBMemoryAdapter
from memsys.adapters.lmdb_store import LMDBMemoryAdapter
from memsys.adapters.tinydb_store import TinyDBMemoryAdapter
from memsys.application.transactions import STEPS
from memsys.domain.errors import CommitIncompleteError, MemsysError
from memsys.domain.model import MemoryItem, MemoryType
from memsys.testing.crash import SimulatedCrash, crash_at
from memsys.testing.history import TransactionCheck, TransactionRecord, check_transactions
from memsys.testing.powerloss import PowerLossFS

pytestmark = pytest.mark.server

STORES = ("duckdb", "lmdb", "tinydb")


def open_stores(workdir: str) -> dict[str, Any]:
    return {"duckdb": DuckDBMemoryAdapter(path=os.path.join(workdir, "items.duckdb"), sync=False),
            "lmdb": LMDBMemoryAdapter(path=os.path.join(workdir, "lmdb"), sync=False),
            "tinydb": TinyDBMemoryAdapter(path=os.path.join(workdir, "items.json"), sync=False)}


def close_quietly(manager: MemoryManager | None, stores: dict[str, Any]) -> None:
    """Drop what a process that lost its power held: its closes reach a dead mount and may fail."""
    previous = logging.root.manager.disable
    logging.disable(logging.CRITICAL)
    try:
        if manager is not None:
            with contextlib.suppress(Exception):
                manager.coordinator.log.close()
        for adapter in stores.values():
            adapter._coordinator = None
            with contextlib.suppress(Exception):
                adapter.close()
    finally:
        logging.disable(previous)


def cut_power_after(fs: PowerLossFS, adapter: Any, method: str, calls: int = 1) -> list[int]:
    """Make the ``calls``-th call of the store's port method ``method`` finish, then lose the power:
    the process stops there (SimulatedCrash). Returns the call counter."""
    original = getattr(adapter, method)
    seen = [0]

    def then_power_failure(*args: Any, **kwargs: Any) -> Any:
        result = original(*args, **kwargs)
        seen[0] += 1
        if seen[0] == calls:
            fs.power_failure()
            raise SimulatedCrash(f"power failure after {method} on {adapter.name}")
        return result

    setattr(adapter, method, then_power_failure)
    return seen


class Workload:
    """Cross-store transactions on the mount, one history, one manager at a time."""

    def __init__(self, fs: PowerLossFS, seed: int, compact_records: int = 20_000) -> None:
        self.fs = fs
        self.rng = random.Random(seed)
        self.workdir = os.path.join(fs.mount_point, "stores")
        os.makedirs(self.workdir, exist_ok=True)
        self.compact_records = compact_records
        self.history: dict[str, TransactionRecord] = {}
        self.manager: MemoryManager | None = None
        self.stores: dict[str, Any] = {}

    def open(self, prepare: Callable[[dict[str, Any]], None] | None = None) -> MemoryManager:
        """Open the stores and a manager on them (recovery runs); ``prepare`` sees the stores first."""
        self.stores = open_stores(self.workdir)
        if prepare is not None:
            prepare(self.stores)
        self.manager = None
        try:
            self.manager = MemoryManager(self.stores, transaction_log=os.path.join(self.workdir, "txlog"),
                                         compact_records=self.compact_records)
        except BaseException:
            close_quietly(None, self.stores)
            raise
        return self.manager

    def transaction(self) -> None:
        assert self.manager is not None
        tx_id = f"t{len(self.history):04d}"
        stores = sorted(self.rng.sample(STORES, self.rng.randint(2, len(STORES))))
        record = TransactionRecord(tx_id, {s: [f"{tx_id}-{s}-{j}" for j in range(self.rng.randint(1, 2))]
                                           for s in stores})
        self.history[tx_id] = record
        try:
            with self.manager.with_transaction(stores):
                for store, ids in record.writes.items():
                    for item_id in ids:
                        self.manager.adapters[store].store(MemoryItem(
                            id=item_id, content=f"{tx_id} on {store}", memory_type=MemoryType.EPISODIC))
        except SimulatedCrash:
            record.outcome = "info"  # the power went mid-commit: all or nothing, either is fine
            raise
        except CommitIncompleteError:
            record.outcome = "ok"  # decided: recovery owes it
        except MemsysError:
            record.outcome = "fail"
        else:
            record.outcome = "ok"

    def power_failure(self) -> None:
        self.fs.power_failure()
        self.drop()

    def drop(self) -> None:
        close_quietly(self.manager, self.stores)
        self.manager = None

    def check(self) -> TransactionCheck:
        """Reopen (recovery runs) and judge the whole history."""
        manager = self.open()
        try:
            assert manager.last_recovery.ok, manager.last_recovery
            present = {name: {item.id for item in adapter.iter_items()} for name, adapter in manager.adapters.items()}
        finally:
            manager.close()
            self.manager = None
        result = check_transactions(self.history, present)
        assert result.valid, result
        return result


@pytest.fixture
def workload(plfs) -> Workload:
    return Workload(plfs, seed=11)


def test_power_failures_mid_commit_at_every_step_of_cross_store_transactions(workload) -> None:
    workload.open()
    for step in STEPS:
        for _ in range(2):
            workload.transaction()
        crash_at(workload.manager, step)
        with pytest.raises(SimulatedCrash):
            workload.transaction()
        workload.power_failure()  # the process stopped at the step; now the power goes
        workload.open()  # recovery: redo what was decided, presume the rest aborted
    workload.transaction()
    workload.power_failure()  # between transactions: the stores lose their unsynced pages
    workload.drop()
    result = workload.check()
    assert result.acknowledged == 2 * len(STEPS) + 1 and result.unknown == len(STEPS)


def test_power_failures_right_after_and_in_the_middle_of_log_compaction(plfs) -> None:
    workload = Workload(plfs, seed=12, compact_records=8)
    manager = workload.open()
    checkpoints = manager.coordinator.metrics.counter("checkpoints")
    cuts = 0
    while cuts < 3:  # right after a compaction: the log forgot what the stores were told to keep
        workload.transaction()
        now = workload.manager.coordinator.metrics.counter("checkpoints")
        if now > checkpoints:
            workload.power_failure()
            cuts += 1
            checkpoints = workload.open().coordinator.metrics.counter("checkpoints")
    workload.drop()
    assert workload.check().acknowledged >= 6  # judged now: nothing acknowledged before a compaction is lost
    workload.open()
    for store in ("duckdb", "lmdb", "tinydb"):  # in the middle: after one store's flush, before the log's rewrite
        calls = cut_power_after(plfs, workload.manager.adapters[store], "flush")
        with pytest.raises(SimulatedCrash):
            for _ in range(20):
                workload.transaction()
        assert calls[0] == 1
        workload.drop()
        workload.open()
    workload.drop()
    result = workload.check()
    assert result.acknowledged >= 10


def test_power_failures_in_the_middle_of_and_right_after_recovery(workload) -> None:
    workload.open()
    for _ in range(6):
        workload.transaction()
    workload.power_failure()  # the unsynced stores lose what they applied: recovery has work to do
    for store in ("duckdb", "lmdb", "tinydb"):  # the power goes again while recovery redoes that store
        seen: list[list[int]] = []
        # The process dies there (SimulatedCrash); its cleanup may meet the dead mount first.
        with pytest.raises(BaseException):  # noqa: B017, PT011
            workload.open(lambda stores: seen.append(cut_power_after(workload.fs, stores[store], "apply_prepared")))
        assert seen and seen[0][0] == 1, f"recovery did not redo anything on {store}"
    workload.open()  # recovery completes ...
    workload.power_failure()  # ... and the power goes at once: what it redid must have been made durable
    workload.open()
    workload.transaction()
    workload.drop()
    result = workload.check()
    assert result.acknowledged == 7
