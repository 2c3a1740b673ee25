"""The coordinator under real faults: a full disk under its log, a failed fsync, a second
manager on its log, a store that refuses one write for good, a store that is missing or
quarantined when the log is compacted, and a manager without a durable log.

Disk full is real (an 8 MiB tmpfs, the ``small_disk`` fixture). A failing fsync cannot be had
from tmpfs or a loop device without a device-mapper target this machine may lack, so it is
simulated by making ``os.fsync`` raise EIO for the log's file descriptor only (everything else
runs for real): that is exactly what the kernel reports when writeback of the log fails.
"""

from __future__ import annotations

import errno
import json
import os
import shutil

import pytest

from memsys import MemoryManager
from memsys.adapters.lmdb_store import LMDBMemoryAdapter
from memsys.adapters.tinydb_store import TinyDBMemoryAdapter
from memsys.application.txlog import CoordinatorLog, dead_letter_path, read_dead_letters
from memsys.cli import main
from memsys.domain.errors import (
    CommitIncompleteError,
    DiskFullError,
    InvalidInputError,
    StoreError,
    StoreLockedError,
    StoreUnavailableError,
    TransactionAbortedError,
)
from memsys.domain.operations import Put
from memsys.testing import dump, sample_item
from memsys.testing.crash import abandon
from memsys.testing.disk import fill

PAGE = 4096  # tmpfs allocates whole pages: an append that needs a new one fails on a full disk


def open_stores(root, lmdb_class=LMDBMemoryAdapter, **lmdb_options) -> dict:
    return {"lmdb": lmdb_class(path=root / "lmdb", sync=False, **lmdb_options),
            "tinydb": TinyDBMemoryAdapter(path=root / "items.json", sync=False)}


def where(manager, item_id) -> dict[str, bool]:
    return {name: adapter.retrieve(item_id) is not None for name, adapter in manager.adapters.items()}


def pad_log_to(manager, log_path, remainder: int) -> None:
    """Commit padding items until the log's size is ``remainder`` modulo a page, so the slack left
    in its last page (what a full tmpfs still takes) is known exactly."""
    manager.store(sample_item(900, content="x"), ["lmdb"])  # from here on, each append carries an end record
    size = os.path.getsize(log_path)
    manager.store(sample_item(900, content="x"), ["lmdb"])
    overhead = os.path.getsize(log_path) - size - 1  # bytes a one-character transaction adds
    for attempt in range(6):
        size = os.path.getsize(log_path)
        if size % PAGE == remainder:
            return
        need = (remainder - size) % PAGE
        if need <= overhead + 1:
            need += PAGE
        manager.store(sample_item(900, content="x" * (need - overhead)), ["lmdb"])
    raise AssertionError(f"could not pad the log to {remainder} mod {PAGE}")


# ------------------------------------------------------------------ item 1: a full disk under the log


def test_disk_full_at_the_first_log_write_is_typed_and_never_committed_later(tmp_path, small_disk) -> None:
    log_path = os.path.join(small_disk, "txlog")
    manager = MemoryManager(open_stores(tmp_path), transaction_log=log_path)
    pad_log_to(manager, log_path, 0)  # the last page is full: the next record needs a new one
    ballast = fill(small_disk)
    with pytest.raises(TransactionAbortedError, match="disk is full") as failure:
        manager.store(sample_item(1))
    assert isinstance(failure.value.__cause__, DiskFullError) and failure.value.transient
    assert where(manager, "item-00001") == {"lmdb": False, "tinydb": False}
    os.unlink(ballast)
    manager.store(sample_item(2))  # the next, unrelated transaction must not carry the failed one along
    assert where(manager, "item-00001") == {"lmdb": False, "tinydb": False}
    manager.close()
    reopened = MemoryManager(open_stores(tmp_path), transaction_log=log_path)
    try:
        assert where(reopened, "item-00001") == {"lmdb": False, "tinydb": False}
        assert where(reopened, "item-00002") == {"lmdb": True, "tinydb": True}
        assert reopened.last_recovery.ok
    finally:
        reopened.close()


def test_disk_full_at_the_commit_record_leaves_no_commit_to_redo(tmp_path, small_disk) -> None:
    log_path = os.path.join(small_disk, "txlog")
    manager = MemoryManager(open_stores(tmp_path), transaction_log=log_path)
    pad_log_to(manager, log_path, PAGE - 1024)  # room for the prepare record, not for an 8 KiB commit
    ballast = fill(small_disk)
    with pytest.raises(TransactionAbortedError, match="disk is full") as failure:
        manager.store(sample_item(1, content="y" * 8192))
    assert isinstance(failure.value.__cause__, DiskFullError)
    os.unlink(ballast)
    manager.store(sample_item(2))
    abandon(manager)  # a crash: no checkpoint; recovery reads the log as the failure left it
    reopened = MemoryManager(open_stores(tmp_path), transaction_log=log_path)
    try:
        assert where(reopened, "item-00001") == {"lmdb": False, "tinydb": False}
        assert where(reopened, "item-00002") == {"lmdb": True, "tinydb": True}
        assert failure.value.transaction_id in reopened.last_recovery.undone  # its prepare, never its commit
    finally:
        reopened.close()


def test_disk_full_before_the_log_has_its_header(tmp_path, small_disk) -> None:
    log_path = os.path.join(small_disk, "txlog")
    ballast = fill(small_disk)
    manager = MemoryManager(open_stores(tmp_path), transaction_log=log_path)  # cannot even checkpoint
    with pytest.raises(TransactionAbortedError) as failure:
        manager.store(sample_item(1))
    assert isinstance(failure.value.__cause__, DiskFullError)
    os.unlink(ballast)
    manager.store(sample_item(2))
    abandon(manager)
    reopened = MemoryManager(open_stores(tmp_path), transaction_log=log_path)
    try:
        assert where(reopened, "item-00001") == {"lmdb": False, "tinydb": False}
        assert where(reopened, "item-00002") == {"lmdb": True, "tinydb": True}
    finally:
        reopened.close()


class FailingFsync:
    """os.fsync that raises EIO ``times`` times for file descriptors of ``path``, like a failed writeback."""

    def __init__(self, monkeypatch, path: str, times: int) -> None:
        self.path = os.path.realpath(path)
        self.left = times
        self.real = os.fsync
        monkeypatch.setattr(os, "fsync", self)

    def __call__(self, fd: int) -> None:
        if self.left > 0 and os.path.realpath(os.readlink(f"/proc/self/fd/{fd}")) == self.path:
            self.left -= 1
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        self.real(fd)


def test_a_failed_fsync_of_the_commit_records_is_cut_back_durably(tmp_path, monkeypatch) -> None:
    log_path = str(tmp_path / "txlog")
    manager = MemoryManager(open_stores(tmp_path), transaction_log=log_path)
    manager.store(sample_item(0))
    FailingFsync(monkeypatch, log_path, times=1)
    with pytest.raises(TransactionAbortedError, match="coordinator log") as failure:
        manager.store(sample_item(1))
    assert where(manager, "item-00001") == {"lmdb": False, "tinydb": False}
    manager.store(sample_item(2))
    abandon(manager)
    reopened = MemoryManager(open_stores(tmp_path), transaction_log=log_path)
    try:
        assert where(reopened, "item-00001") == {"lmdb": False, "tinydb": False}, "an aborted commit was redone"
        assert where(reopened, "item-00002") == {"lmdb": True, "tinydb": True}
        assert failure.value.transaction_id in reopened.last_recovery.undone
    finally:
        reopened.close()


def test_when_the_cut_back_fails_too_the_log_refuses_commits_until_it_succeeds(tmp_path, monkeypatch) -> None:
    log_path = str(tmp_path / "txlog")
    manager = MemoryManager(open_stores(tmp_path), transaction_log=log_path)
    fsync = FailingFsync(monkeypatch, log_path, times=10**6)  # the log's disk fails every fsync for now
    with pytest.raises(TransactionAbortedError):
        manager.store(sample_item(1))
    with pytest.raises(TransactionAbortedError, match="takes no commits") as refused:
        manager.store(sample_item(2))
    assert isinstance(refused.value.__cause__, StoreError)
    fsync.left = 0  # the disk recovers
    manager.store(sample_item(3))  # the cut is made durable first, then this commit goes in
    abandon(manager)
    reopened = MemoryManager(open_stores(tmp_path), transaction_log=log_path)
    try:
        assert {i: where(reopened, f"item-0000{i}")["lmdb"] for i in (1, 2, 3)} == {1: False, 2: False, 3: True}
    finally:
        reopened.close()


# ------------------------------------------------------------------ item 13 and item 4: the log's path


def test_a_folder_or_a_non_path_as_transaction_log_is_a_typed_error_and_binds_nothing(tmp_path) -> None:
    stores = open_stores(tmp_path)
    with pytest.raises(InvalidInputError, match="is a folder") as failure:
        MemoryManager(stores, transaction_log=tmp_path)
    assert str(tmp_path) in str(failure.value)
    with pytest.raises(InvalidInputError, match="transaction_log must be a file path"):
        MemoryManager(stores, transaction_log=42)
    (tmp_path / "plain").write_text("")
    with pytest.raises(InvalidInputError, match="is a file, not a folder"):
        MemoryManager(stores, transaction_log=tmp_path / "plain" / "txlog")
    with pytest.raises(InvalidInputError, match="operation_log"):
        MemoryManager(stores, transaction_log=tmp_path / "txlog", operation_log=tmp_path)
    manager = MemoryManager(stores, transaction_log=tmp_path / "txlog")  # the stores are still free
    manager.store(sample_item(1))
    manager.close()


def test_two_managers_on_one_log_are_refused_until_the_first_closes(tmp_path) -> None:
    first = MemoryManager(open_stores(tmp_path / "a"), transaction_log=tmp_path / "txlog",
                          operation_log=tmp_path / "ops.jsonl")
    second_stores = open_stores(tmp_path / "b")
    with pytest.raises(StoreLockedError) as failure:
        MemoryManager(second_stores, transaction_log=tmp_path / "txlog")
    assert failure.value.path == str(tmp_path / "txlog") and "MemoryManager" in failure.value.holder
    with pytest.raises(StoreLockedError):
        MemoryManager(second_stores, transaction_log=tmp_path / "other-txlog", operation_log=tmp_path / "ops.jsonl")
    first.store(sample_item(1))
    first.close()
    second = MemoryManager(second_stores, transaction_log=tmp_path / "txlog")
    try:
        assert second.last_recovery.ok and not second.last_recovery.redone
        second.store(sample_item(2))
    finally:
        second.close()


# ------------------------------------------------------------------ item 9: writes a store has not applied


def fail_applies(monkeypatch, adapter) -> None:
    def unavailable(ops, *, durable=True):
        raise StoreUnavailableError("injected: the store is away", store=adapter.name)

    monkeypatch.setattr(adapter, "apply_prepared", unavailable)


def test_a_manager_opened_without_the_failing_store_keeps_its_writes_for_it(tmp_path, monkeypatch) -> None:
    log_path = tmp_path / "txlog"
    first = MemoryManager(open_stores(tmp_path), transaction_log=log_path)
    fail_applies(monkeypatch, first.adapters["tinydb"])
    with pytest.raises(CommitIncompleteError):
        first.store(sample_item(1))
    first.close()  # checkpoints, but must carry the write tinydb lacks
    without = MemoryManager({"lmdb": LMDBMemoryAdapter(path=tmp_path / "lmdb", sync=False)}, transaction_log=log_path)
    assert "tinydb" in without.last_recovery.failed_stores and not without.last_recovery.ok
    without.store(sample_item(2))
    without.close()  # the second checkpoint must carry it too
    again = MemoryManager(open_stores(tmp_path), transaction_log=log_path)
    try:
        assert again.last_recovery.ok
        assert where(again, "item-00001") == {"lmdb": True, "tinydb": True}
        assert where(again, "item-00002") == {"lmdb": True, "tinydb": False}
    finally:
        again.close()
    assert CoordinatorLog(log_path).scan().commits == [], "nothing left to carry once every store has it"


def test_compaction_while_a_store_is_quarantined_loses_nothing(tmp_path, monkeypatch) -> None:
    manager = MemoryManager(open_stores(tmp_path), transaction_log=tmp_path / "txlog", compact_records=10)
    try:
        fail_applies(monkeypatch, manager.adapters["tinydb"])
        with pytest.raises(CommitIncompleteError):
            manager.store(sample_item(1))
        for i in range(2, 30):
            manager.store(sample_item(i), ["lmdb"])
        assert manager.coordinator.metrics.counter("checkpoints") >= 3, "the log was not compacted"
        assert "tinydb" in manager.coordinator.quarantined
        monkeypatch.undo()
        report = manager.coordinator.recover(stores=["tinydb"])
        assert report.ok and manager.adapters["tinydb"].retrieve("item-00001") is not None
    finally:
        manager.close()


def test_without_a_transaction_log_recover_redoes_what_a_store_missed(tmp_path, monkeypatch) -> None:
    manager = MemoryManager(open_stores(tmp_path))
    try:
        fail_applies(monkeypatch, manager.adapters["tinydb"])
        with pytest.raises(CommitIncompleteError):
            manager.store(sample_item(1))
        report = manager.recover()
        assert not report.ok and "tinydb" in report.failed_stores, "reported ok while a write is missing"
        monkeypatch.undo()
        report = manager.recover()
        assert report.ok and where(manager, "item-00001") == {"lmdb": True, "tinydb": True}
        assert not manager.coordinator.quarantined
    finally:
        manager.close()


# ------------------------------------------------------------------ item 2: dead letters


class PoisonedLMDB(LMDBMemoryAdapter):
    """LMDB whose engine refuses some items for good at apply, after prepare accepted them
    (as Kuzu refuses a 64 MiB item with "buffer pool is full"); or refuses every write."""

    def __init__(self, *args, poisoned=(), refuse_all=False, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.poisoned = set(poisoned)
        self.refuse_all = refuse_all

    def _apply(self, ops, durable):
        if self.refuse_all:
            raise StoreError(f"{self.name}: the engine refuses every write (injected)", store=self.name)
        for op in ops:
            if isinstance(op, Put) and op.item.id in self.poisoned:
                raise StoreError(f"{self.name}: the engine cannot take item {op.item.id!r} (injected)",
                                 store=self.name)
        super()._apply(ops, durable)


def test_a_write_a_store_refuses_for_good_is_dead_lettered_and_the_store_goes_on(tmp_path, capsys) -> None:
    log_path = str(tmp_path / "txlog")
    manager = MemoryManager(open_stores(tmp_path, PoisonedLMDB, poisoned={"item-00002"}), transaction_log=log_path)
    manager.store(sample_item(1))
    with pytest.raises(CommitIncompleteError, match="dead-letter") as failure:
        manager.store(sample_item(2))
    assert failure.value.committed and failure.value.store == "lmdb"
    assert where(manager, "item-00002") == {"lmdb": False, "tinydb": True}
    [letter] = manager.dead_letters()
    assert (letter.store, letter.item_id, letter.txid) == ("lmdb", "item-00002", failure.value.transaction_id)
    assert "cannot take item" in letter.error
    manager.store(sample_item(3))  # the store goes on
    assert where(manager, "item-00003") == {"lmdb": True, "tinydb": True} and not manager.coordinator.quarantined
    manager.close()
    assert [d.id for d in read_dead_letters(log_path)] == [letter.id]  # durable, beside the log
    assert CoordinatorLog(log_path).scan().commits == [], "the log could not be compacted"

    assert main(["dead-letters", "--log", log_path, "--json"]) == 1
    listed = json.loads(capsys.readouterr().out)
    assert [(d["id"], d["store"], d["op"]["item"]["id"]) for d in listed] == [(letter.id, "lmdb", "item-00002")]

    reopened = MemoryManager(open_stores(tmp_path, PoisonedLMDB, poisoned={"item-00002"}), transaction_log=log_path)
    try:
        report = reopened.last_recovery
        assert not report.failed_stores and report.dead_letters == 1 and not report.ok
        reopened.adapters["lmdb"].poisoned.clear()  # the cause is removed
        retry = reopened.retry_dead_letters()
        assert retry.applied == [letter.id] and retry.ok
        got, reference = (reopened.adapters[n].retrieve("item-00002") for n in ("lmdb", "tinydb"))
        assert got.to_dict() == reference.to_dict()  # the committed version, not a new one
        assert reopened.dead_letters() == [] and reopened.recover().ok
        assert reopened.retry_dead_letters().applied == []
    finally:
        reopened.close()
    assert main(["dead-letters", "--log", log_path]) == 0
    assert main(["dead-letters", "--log", str(tmp_path)]) == 2  # a folder: a typed error, not a traceback
    assert "is a folder" in capsys.readouterr().err


def test_recovery_bisects_a_batch_down_to_the_refused_operation(tmp_path) -> None:
    log_path = str(tmp_path / "txlog")
    manager = MemoryManager(open_stores(tmp_path), transaction_log=log_path)
    for i in range(40):
        manager.store(sample_item(i), ["lmdb"])
    before = dump(manager.adapters["lmdb"])
    abandon(manager)
    shutil.rmtree(tmp_path / "lmdb")  # the store lost its writes: recovery must bring them back
    stores = open_stores(tmp_path, PoisonedLMDB, poisoned={"item-00017"})
    reopened = MemoryManager(stores, transaction_log=log_path)
    try:
        report = reopened.last_recovery
        assert [d.item_id for d in report.dead_lettered] == ["item-00017"] and not report.failed_stores
        after = dump(reopened.adapters["lmdb"])
        assert after == {k: v for k, v in before.items() if k != "item-00017"}
        reopened.discard_dead_letters([report.dead_lettered[0].id])
        assert reopened.dead_letters() == [] and reopened.recover().ok
        with pytest.raises(InvalidInputError):
            reopened.discard_dead_letters(["lmdb/1/0"])
    finally:
        reopened.close()


def test_a_store_that_refuses_every_write_is_quarantined_not_emptied_into_dead_letters(tmp_path) -> None:
    stores = open_stores(tmp_path, PoisonedLMDB)
    manager = MemoryManager(stores, transaction_log=tmp_path / "txlog")
    try:
        stores["lmdb"].refuse_all = True
        with pytest.raises(CommitIncompleteError):
            manager.store(sample_item(1))
        assert manager.dead_letters() == [] and "lmdb" in manager.coordinator.quarantined
        stores["lmdb"].refuse_all = False
        assert manager.recover().ok and where(manager, "item-00001") == {"lmdb": True, "tinydb": True}
    finally:
        manager.close()


# ------------------------------------------------------------------ recovery of many operations


def test_recovery_of_more_than_one_batch_for_one_store_keeps_every_version(tmp_path) -> None:
    log_path = str(tmp_path / "txlog")
    manager = MemoryManager(open_stores(tmp_path), transaction_log=log_path)
    for t in range(3):  # 3,000 operations: more than one redo batch (2,000)
        with manager.with_transaction(["lmdb"]):
            for i in range(1000):
                manager.adapters["lmdb"].store(sample_item(t * 1000 + i))
    before = dump(manager.adapters["lmdb"])
    assert len(before) == 3000 and len({v["version"] for v in before.values()}) == 3
    abandon(manager)
    shutil.rmtree(tmp_path / "lmdb")
    reopened = MemoryManager(open_stores(tmp_path), transaction_log=log_path)
    try:
        assert reopened.last_recovery.ok and len(reopened.last_recovery.redone) == 3
        assert dump(reopened.adapters["lmdb"]) == before  # every item, with the version it was committed with
    finally:
        reopened.close()
    assert not os.path.exists(dead_letter_path(log_path)) or read_dead_letters(log_path) == []
