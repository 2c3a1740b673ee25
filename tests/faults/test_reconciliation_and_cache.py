"""The reconciliation queue under a real full disk and damaged files, and the read-through
cache racing a commit (threads and events, no timing)."""

from __future__ import annotations

import json
import os
import threading

import pytest

from memsys import MemoryManager
from memsys.adapters.lmdb_store import LMDBMemoryAdapter
from memsys.adapters.tinydb_store import TinyDBMemoryAdapter
from memsys.domain.errors import CorruptStoreError, DiskFullError, StoreClosedError, StoreLockedError
from memsys.resilience.cache import ReadThroughCache
from memsys.resilience.degraded import ReconciliationQueue
from memsys.testing import sample_item
from memsys.testing.disk import fill
from memsys.testing.faults import FaultInjector


def queued(path) -> list[tuple[int, str, str, object]]:
    queue = ReconciliationQueue(path)
    try:
        return [(e.seq, e.store, e.item.id, e.item.content) for e in queue.latest()]
    finally:
        queue.close()


def big_item(i: int):
    return sample_item(i, content="q" * (64 << 10))  # more than a page: a real short write


# --- a full disk ------------------------------------------------------------------------------


def test_a_full_disk_refuses_an_entry_typed_and_loses_no_acknowledged_one(small_disk) -> None:
    path = os.path.join(small_disk, "queue")
    queue = ReconciliationQueue(path)
    queue.add("lmdb", sample_item(1))
    before = open(path, "rb").read()
    ballast = fill(small_disk, leave=8192)
    for _ in range(2):
        with pytest.raises(DiskFullError, match="disk is full"):
            queue.add("lmdb", big_item(2))
        assert open(path, "rb").read() == before, "a refused entry left part of itself in the file"
    assert len(queue) == 1
    os.unlink(ballast)
    queue.add("lmdb", sample_item(3))  # acknowledged after space returned
    queue.add("duckdb", sample_item(4))
    queue.close()
    assert [(seq, store, item) for seq, store, item, _ in queued(path)] == \
        [(1, "lmdb", "item-00001"), (2, "lmdb", "item-00003"), (3, "duckdb", "item-00004")]


def test_store_with_degraded_mode_reports_a_full_queue_disk_as_disk_full(tmp_path, small_disk) -> None:
    path = os.path.join(small_disk, "queue")
    manager = MemoryManager({"lmdb": LMDBMemoryAdapter(path=tmp_path / "lmdb"),
                             "tinydb": TinyDBMemoryAdapter(path=tmp_path / "items.json")},
                            fallback_store="tinydb", reconciliation_queue=path)
    try:
        FaultInjector(manager.adapters["lmdb"], seed=1).fail("prepare")
        ballast = fill(small_disk)
        with pytest.raises(DiskFullError):
            manager.store_with_degraded_mode(big_item(1))
        os.unlink(ballast)
        manager.store_with_degraded_mode(sample_item(2))
        assert [e.item.id for e in manager.reconciliation.latest()] == ["item-00002"]
    finally:
        manager.reconciliation.close()
        manager.close()
    assert [item for _, _, item, _ in queued(path)] == ["item-00002"]


# --- damaged files ----------------------------------------------------------------------------


def framed_queue(path, n: int) -> list[int]:
    queue = ReconciliationQueue(path)
    for i in range(n):
        queue.add("lmdb", sample_item(i))
    queue.close()
    data = open(path, "rb").read()
    return [data.index(b'{"seq": %d,' % (i + 1)) - 12 for i in range(n)]


@pytest.mark.parametrize("where", ["length", "payload"])
def test_a_flipped_bit_before_the_tail_is_corruption_naming_the_offset(tmp_path, where) -> None:
    path = tmp_path / "queue"
    offsets = framed_queue(path, 8)
    data = bytearray(path.read_bytes())
    data[offsets[3] + (1 if where == "length" else 40)] ^= 0x10
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptStoreError, match=f"byte {offsets[3]}\\b"):
        ReconciliationQueue(path)
    assert path.read_bytes() == bytes(data)
    ReconciliationQueue(tmp_path / "other").close()  # the refused open released its lock
    with pytest.raises(CorruptStoreError):
        ReconciliationQueue(path)


def test_a_torn_last_entry_is_dropped_and_the_next_one_kept(tmp_path) -> None:
    path = tmp_path / "queue"
    offsets = framed_queue(path, 3)
    data = path.read_bytes()
    for cut in range(offsets[2], len(data), 7):
        path.write_bytes(data[:cut])
        assert [item for _, _, item, _ in queued(path)] == ["item-00000", "item-00001"]
    queue = ReconciliationQueue(path)
    queue.add("lmdb", sample_item(9))
    queue.close()
    assert [item for _, _, item, _ in queued(path)] == ["item-00000", "item-00001", "item-00009"]


def test_a_checksummed_record_that_is_no_queued_write_is_corruption(tmp_path) -> None:
    from memsys.durable import FramedLog

    path = str(tmp_path / "queue")
    framed = FramedLog(path, "RECONCILE")
    framed.append([json.dumps({"seq": 1, "stor": "lmdb"}).encode()], sync=False)
    framed.close()
    with pytest.raises(CorruptStoreError, match="record at byte"):
        ReconciliationQueue(path)


def legacy_line(seq: int, store: str, i: int) -> str:
    return json.dumps({"seq": seq, "store": store, "item": sample_item(i).to_dict()})


def test_old_json_lines_are_read_and_a_damaged_line_is_corruption_naming_it(tmp_path) -> None:
    path = tmp_path / "queue.jsonl"
    lines = [legacy_line(1, "lmdb", 1), legacy_line(2, "lmdb", 2)]
    path.write_text("\n".join(lines) + "\n" + legacy_line(3, "lmdb", 3)[:50])  # torn last line
    assert [seq for seq, *_ in queued(path)] == [1, 2]
    damaged = "\n".join([lines[0], '{"seq": 2, "item": {}}', lines[1]]) + "\n"  # valid JSON, not an entry
    path.write_text(damaged)
    with pytest.raises(CorruptStoreError, match="line 2"):
        ReconciliationQueue(path)
    assert path.read_text() == damaged


def test_an_old_queue_with_an_entry_appended_onto_a_torn_line_keeps_that_entry(tmp_path) -> None:
    """What the old writer left after a full disk: a partial line, the next (acknowledged) entry
    glued onto it, and more entries after it. Every acknowledged entry is read."""
    path = tmp_path / "queue.jsonl"
    path.write_text(legacy_line(1, "lmdb", 1) + "\n" + legacy_line(2, "lmdb", 2)[:70]
                    + legacy_line(3, "lmdb", 3) + "\n" + legacy_line(4, "duckdb", 4) + "\n")
    assert [(seq, item) for seq, _, item, _ in queued(path)] == [(1, "item-00001"), (3, "item-00003"),
                                                                (4, "item-00004")]
    queue = ReconciliationQueue(path)
    queue.add("lmdb", sample_item(5))  # rewrites the file in the framed format
    queue.close()
    assert path.read_bytes().startswith(b"MEMSYS-RECONCILE-")
    assert [seq for seq, *_ in queued(path)] == [1, 3, 4, 5]


def test_two_queues_cannot_share_a_file_and_close_releases_it(tmp_path) -> None:
    path = tmp_path / "queue"
    first = ReconciliationQueue(path)
    with pytest.raises(StoreLockedError):
        ReconciliationQueue(path)
    first.add("lmdb", sample_item(1))
    first.close()
    with pytest.raises(StoreClosedError):
        first.add("lmdb", sample_item(2))
    second = ReconciliationQueue(path)
    assert len(second) == 1
    second.close()


def test_opening_a_queue_removes_temp_files_a_killed_rewrite_left(tmp_path) -> None:
    path = tmp_path / "queue"
    framed_queue(path, 1)
    stale = tmp_path / ".queue.x1y2z3.tmp"
    stale.write_bytes(b"partial")
    assert len(ReconciliationQueue(path)) == 1
    assert not stale.exists()


# --- the read-through cache -------------------------------------------------------------------


def test_a_fill_read_before_an_invalidation_is_refused() -> None:
    cache = ReadThroughCache()
    token = cache.token("k")
    cache.invalidate("k")  # a commit lands while the value is being read
    assert cache.set("k", "old", token=token) is False and cache.get("k") is None
    assert cache.set("k", "new", token=cache.token("k")) is True and cache.get("k") == "new"
    # The implicit protocol of get: a miss takes the token of the fill that follows it.
    cache.invalidate("k")
    assert cache.get("k") is None
    cache.invalidate("k")
    assert cache.set("k", "old") is False and cache.get("k") is None


def test_invalidating_an_uncached_id_never_raises_and_keeps_memory_bounded() -> None:
    cache = ReadThroughCache(capacity=4)
    cache.set("cached", 1)
    for n in range(100):
        assert cache.invalidate(f"never-cached-{n}") is None
    assert cache.get("cached") == 1, "an unrelated invalidation dropped a cached value"
    assert len(cache._invalidated) <= 4
    assert cache.set("x", "fresh", token=cache.token("x")) is True and cache.get("x") == "fresh"


@pytest.fixture
def manager(tmp_path):
    m = MemoryManager({"lmdb": LMDBMemoryAdapter(path=tmp_path / "lmdb"),
                       "tinydb": TinyDBMemoryAdapter(path=tmp_path / "items.json")})
    yield m
    m.close()


def test_a_slow_read_straddling_a_commit_is_never_cached(manager, monkeypatch) -> None:
    manager.store(sample_item(1, content="v1"))
    adapter = manager.adapters["lmdb"]
    read_done, commit_done = threading.Event(), threading.Event()
    reader_result: list = []
    original = adapter.retrieve

    def slow_retrieve(item_id):
        item = original(item_id)
        if threading.current_thread().name == "slow-reader":
            read_done.set()  # the old value is read ...
            assert commit_done.wait(20)  # ... and returned only after the commit invalidated the cache
        return item

    monkeypatch.setattr(adapter, "retrieve", slow_retrieve)
    reader = threading.Thread(target=lambda: reader_result.append(manager.get_with_cache("item-00001")),
                              name="slow-reader")
    reader.start()
    assert read_done.wait(20)
    manager.store(sample_item(1, content="v2"))
    commit_done.set()
    reader.join(20)
    assert not reader.is_alive() and reader_result[0].content == "v1"  # it started before the commit
    assert manager.get_with_cache("item-00001").content == "v2", "the cache kept a value older than a commit"


def test_an_uncached_id_in_a_group_does_not_stop_the_others_being_invalidated(manager) -> None:
    manager.store(sample_item(2, content="v1"))
    assert manager.get_with_cache("item-00002").content == "v1"
    with manager.with_transaction(["lmdb"]):
        manager.adapters["lmdb"].store(sample_item(1, content="never cached"))
        manager.adapters["lmdb"].store(sample_item(2, content="v2"))
    assert manager.get_with_cache("item-00002").content == "v2"
