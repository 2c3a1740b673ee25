"""Faults the file-backed stores (TinyDB, NetworkX, FAISS) meet, for real.

A second opener (another object, another process), a real full disk (tmpfs), flipped
bytes in snapshots and journals, a process killed mid-write, callers that change
objects they handed in or got back, sustained updates, and constructor arguments
that would abort the process inside FAISS.
"""

from __future__ import annotations

import glob
import inspect
import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from memsys import (
    CorruptStoreError,
    DiskFullError,
    InvalidInputError,
    MemoryItem,
    MemoryType,
    StoreLockedError,
)
from memsys.testing import sample_item
from memsys.testing.disk import fill

KINDS = ["tinydb", "networkx", "faiss"]
DIMENSION = 16



def open_store(kind, path, **options):
    if kind == "tinydb":
        from memsys.adapters.tinydb_store import TinyDBMemoryAdapter
        return TinyDBMemoryAdapter(path=path, **options)
    if kind == "networkx":
        from memsys.adapters.networkx_store import GraphMemoryAdapter
        return GraphMemoryAdapter(path=path, **options)
    from memsys.adapters.faiss_store import FAISSVectorStore
    return FAISSVectorStore(path=path, dimension=16, **options)


OPENER = inspect.getsource(open_store)  # child processes open stores the same way


def store_path(kind: str, folder) -> str:
    return os.path.join(os.fspath(folder), {"tinydb": "items.json", "networkx": "graph", "faiss": "faiss"}[kind])


def data_files(kind: str, path: str) -> list[str]:
    """The store's data files (not its lock file)."""
    if kind == "tinydb":
        return [p for p in (path, path + ".journal") if os.path.exists(p)]
    return sorted(glob.glob(os.path.join(path, "*")))


def snapshot_file(kind: str, path: str) -> str:
    return path if kind == "tinydb" else os.path.join(path, f"{'graph' if kind == 'networkx' else 'faiss'}.snapshot")


def journal_file(kind: str, path: str) -> str:
    return path + ".journal" if kind == "tinydb" else os.path.join(path, "journal.log")


def contents(kind: str, path: str) -> dict[str, bytes]:
    return {p: open(p, "rb").read() for p in data_files(kind, path)}


def state(store) -> dict[str, dict]:
    return {item.id: plain(item) for item in store.search({})}


def plain(item: MemoryItem) -> dict:
    return json.loads(json.dumps(item.to_dict()))


# --------------------------------------------------------------------------- a second opener


@pytest.mark.parametrize("kind", KINDS)
def test_a_second_opener_in_this_process_is_refused_naming_the_holder(kind, tmp_path) -> None:
    path = store_path(kind, tmp_path)
    first = open_store(kind, path)
    first.store(sample_item(1))
    with pytest.raises(StoreLockedError) as refused:
        open_store(kind, path)
    assert refused.value.path == os.path.abspath(path)
    assert f"pid {os.getpid()}" in refused.value.holder and type(first).__name__ in refused.value.holder
    first.store(sample_item(2))  # the holder is unaffected
    first.close()
    second = open_store(kind, path)  # close() released it
    assert sorted(state(second)) == ["item-00001", "item-00002"]
    second.close()


def test_tinydb_through_tinydb_itself_and_the_adapter_exclude_each_other(tmp_path) -> None:
    import tinydb

    from memsys.adapters.tinydb_store import JournalStorage, TinyDBMemoryAdapter

    path = store_path("tinydb", tmp_path)
    adapter = TinyDBMemoryAdapter(path=path)
    with pytest.raises(StoreLockedError):
        tinydb.TinyDB(path, storage=JournalStorage)
    adapter.close()
    db = tinydb.TinyDB(path, storage=JournalStorage)
    with pytest.raises(StoreLockedError):
        TinyDBMemoryAdapter(path=path)
    db.close()
    TinyDBMemoryAdapter(path=path).close()


_HOLDER = OPENER + textwrap.dedent("""
    import sys
    from memsys.testing import sample_item
    store = open_store(sys.argv[1], sys.argv[2])
    store.store(sample_item(7, content="written by the child"))
    print("ready", flush=True)
    sys.stdin.read()  # hold the store until the parent closes our stdin or kills us
""")


@pytest.mark.parametrize("kind", KINDS)
def test_a_second_opener_in_another_process_is_refused_until_the_holder_dies(kind, tmp_path) -> None:
    path = store_path(kind, tmp_path)
    child = subprocess.Popen([sys.executable, "-c", _HOLDER, kind, path], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert child.stdout.readline().strip() == b"ready", child.stderr.read().decode()[-2000:]
        with pytest.raises(StoreLockedError) as refused:
            open_store(kind, path)
        assert f"pid {child.pid}" in refused.value.holder
    finally:
        child.send_signal(signal.SIGKILL)  # the OS drops the lock with its holder
        child.wait(timeout=30)
    store = open_store(kind, path)
    assert store.retrieve("item-00007").content == "written by the child"  # acknowledged before the kill
    store.close()


@pytest.mark.parametrize("kind", KINDS)
def test_a_failed_open_releases_the_path(kind, tmp_path) -> None:
    path = store_path(kind, tmp_path)
    store = open_store(kind, path)
    store.store_many([sample_item(i) for i in range(3)])
    store.compact()
    store.close()
    snapshot = snapshot_file(kind, path)
    good = open(snapshot, "rb").read()
    flip_byte(snapshot, len(good) - 5)
    for _ in range(2):  # the second attempt meets the damage again, not a lock left behind
        with pytest.raises(CorruptStoreError):
            open_store(kind, path)
    open(snapshot, "wb").write(good)
    assert len(state(open_store(kind, path))) == 3


# --------------------------------------------------------------------------- damaged files


def flip_byte(path: str, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0x20]))


@pytest.mark.parametrize("kind", KINDS)
def test_a_flipped_byte_in_a_snapshot_value_is_corruption_naming_the_file(kind, tmp_path) -> None:
    path = store_path(kind, tmp_path)
    store = open_store(kind, path)
    store.store_many([sample_item(i, content=f"value-MARKER-{i}") for i in range(5)])
    store.compact()
    store.close()
    snapshot = snapshot_file(kind, path)
    flip_byte(snapshot, open(snapshot, "rb").read().index(b"MARKER-3"))
    before = contents(kind, path)
    with pytest.raises(CorruptStoreError, match=os.path.basename(snapshot)):
        open_store(kind, path)
    assert contents(kind, path) == before, "a damaged store was written to"


@pytest.mark.parametrize("kind", KINDS)
def test_a_flipped_byte_in_a_journal_record_before_the_tail_is_corruption_naming_file_and_offset(kind, tmp_path):
    path = store_path(kind, tmp_path)
    store = open_store(kind, path)
    for i in range(4):  # one journal record each
        store.store(sample_item(i, content=f"value-MARKER-{i}"))
    store.close()
    journal = journal_file(kind, path)
    flip_byte(journal, open(journal, "rb").read().index(b"MARKER-1"))
    before = contents(kind, path)
    for _ in range(2):
        with pytest.raises(CorruptStoreError, match=rf"{os.path.basename(journal)}.*byte \d+"):
            open_store(kind, path)
    assert contents(kind, path) == before, "a damaged journal was cut or written to"


# --------------------------------------------------------------------------- FAISS arguments


@pytest.mark.parametrize("options", [
    {"index": "hnsw", "hnsw_m": 0}, {"index": "hnsw", "hnsw_m": 1}, {"index": "hnsw", "hnsw_m": -4},
    {"index": "hnsw", "hnsw_m": 10**6}, {"hnsw_m": 2.5}, {"hnsw_m": True}, {"hnsw_m": "32"},
    {"index": "hnsw", "ef_construction": 0}, {"index": "hnsw", "ef_search": 0}, {"ef_search": 10**9},
    {"index": "ivf"}, {"index": None}, {"metric": "l2"}, {"metric": None},
    {"dimension": 0}, {"dimension": -1}, {"dimension": 1}, {"dimension": 10**7}, {"dimension": "16"},
    {"dimension": True}, {"compact_bytes": -1}, {"compact_bytes": "big"}, {"sync": "yes"},
])
def test_faiss_rejects_bad_arguments_before_faiss_or_the_disk_sees_them(options, tmp_path) -> None:
    from memsys.adapters.faiss_store import FAISSVectorStore

    path = tmp_path / "faiss"
    options = {"dimension": DIMENSION, **options}
    with pytest.raises(InvalidInputError):
        FAISSVectorStore(path=path, **options)
    assert os.listdir(tmp_path) == [], "a refused store left files behind"


def test_faiss_hnsw_at_the_smallest_accepted_m_works_for_two_stores(tmp_path) -> None:
    code = textwrap.dedent("""
        import sys
        import numpy as np
        from memsys.adapters.faiss_store import FAISSVectorStore
        from memsys.domain.model import MemoryVector
        rng = np.random.default_rng(1)
        for n in range(2):  # the second store was where hnsw_m=0 aborted
            store = FAISSVectorStore(path=f"{sys.argv[1]}/f{n}", dimension=8, index="hnsw", hnsw_m=2)
            vectors = [MemoryVector(id=f"v{i}", content="c", embedding=rng.normal(size=8).tolist()) for i in range(60)]
            store.store_vectors(vectors)
            assert store.similarity_search(list(vectors[5].embedding), top_k=3)[0].id == "v5"
            store.close()
    """)
    child = subprocess.run([sys.executable, "-c", code, os.fspath(tmp_path)], capture_output=True, timeout=120)
    assert child.returncode == 0, child.stderr.decode()[-2000:]


# --------------------------------------------------------------------------- temporary files of a kill


_KILLED_COMPACTION = OPENER + textwrap.dedent("""
    import os, signal, sys
    from memsys.testing import sample_item
    store = open_store(sys.argv[1], sys.argv[2])
    store.store_many([sample_item(i, content="x" * 2000) for i in range(50)])

    def replace(src, dst, *args, **kwargs):  # die as a SIGKILL would, the snapshot written, not renamed
        os.kill(os.getpid(), signal.SIGKILL)

    os.replace = replace
    store.compact()
""")


@pytest.mark.parametrize("kind", KINDS)
def test_temporary_files_a_killed_process_left_are_removed_at_open(kind, tmp_path) -> None:
    path = store_path(kind, tmp_path)
    child = subprocess.run([sys.executable, "-c", _KILLED_COMPACTION, kind, path], capture_output=True, timeout=120)
    assert child.returncode == -signal.SIGKILL, child.stderr.decode()[-2000:]
    folder = os.path.dirname(snapshot_file(kind, path))
    temps = [p for p in os.listdir(folder) if p.endswith(".tmp")]
    assert temps, "the killed compaction left no temporary file to clean up"
    store = open_store(kind, path)
    assert [p for p in os.listdir(folder) if p.endswith(".tmp")] == []
    assert len(state(store)) == 50
    store.close()


# --------------------------------------------------------------------------- no aliasing


def mutate_everything(value) -> None:
    """Try to change every container reachable from ``value``; read-only ones may refuse."""
    if isinstance(value, dict):
        for element in list(value.values()):
            mutate_everything(element)
        for change in (lambda: value.__setitem__("injected", "by the caller"), lambda: value.pop(next(iter(value))),
                       value.clear):
            try:
                change()
            except (TypeError, AttributeError, StopIteration):
                pass
    elif isinstance(value, list):
        for element in list(value):
            mutate_everything(element)
        for change in (lambda: value.append("by the caller"), lambda: value.__setitem__(0, "changed"), value.clear):
            try:
                change()
            except (TypeError, AttributeError, IndexError):
                pass


def mutate_item(item) -> None:
    mutate_everything(item.metadata)
    mutate_everything(item.content)


@pytest.mark.parametrize("kind", KINDS)
def test_callers_changing_what_they_passed_in_or_got_back_never_change_the_store(kind, tmp_path) -> None:
    path = store_path(kind, tmp_path)
    store = open_store(kind, path)
    metadata = {"nested": {"list": [1, {"deep": "x"}]}, "top": "v"}
    content = {"text": "hello world", "parts": ["a", {"b": [1, 2]}]}
    item = MemoryItem(id="alias-1", content=content, memory_type=MemoryType.KNOWLEDGE, metadata=metadata)
    store.store(item)
    store.store(sample_item(2, content={"other": ["item"]}))
    expected = {"alias-1": plain(item), "item-00002": plain(sample_item(2, content={"other": ["item"]}))}
    properties = {"weight": {"values": [1, 2]}}
    if kind == "networkx":
        store.add_relationship("alias-1", "item-00002", "cites", properties)

    mutate_everything(metadata)  # what the caller passed in, and the item it built
    mutate_everything(content)
    mutate_item(item)
    mutate_everything(properties)
    for got in [store.retrieve("alias-1"), *store.search({}), *store.retrieve_many(["alias-1"]).values(),
                *store.iter_items()]:
        mutate_item(got)
    if kind == "faiss":
        query = list(store.retrieve_vector("alias-1").embedding)
        for vector in store.similarity_search(query, top_k=2):
            mutate_item(vector)
        for hit in store.similar_items(query, top_k=2):
            mutate_item(hit.item)
        for vector in store.similarity_search(query, top_k=2, query={"memory_type": "KNOWLEDGE"}):
            mutate_item(vector)
    if kind == "networkx":
        for got in store.neighbors("alias-1"):
            mutate_item(got)
        mutate_everything(store.get_relationship("alias-1", "item-00002", "cites").properties)
        for relationship in store.get_relationships("alias-1"):
            mutate_everything(relationship.properties)

    assert state(store) == expected, "the store's items changed through a caller's object"
    if kind == "networkx":
        assert store.get_relationship("alias-1", "item-00002", "cites").properties == {"weight": {"values": [1, 2]}}
    store.store(sample_item(3))  # TinyDB's next write would have written a changed document
    expected["item-00003"] = plain(sample_item(3))
    store.close()
    reopened = open_store(kind, path)
    assert state(reopened) == expected, "changed objects reached the disk"
    if kind == "networkx":
        assert reopened.get_relationship("alias-1", "item-00002", "cites").properties == \
            {"weight": {"values": [1, 2]}}
    reopened.close()


# --------------------------------------------------------------------------- a full disk


@pytest.mark.parametrize("kind", KINDS)
def test_writing_until_the_disk_is_full_loses_nothing_acknowledged(kind, small_disk) -> None:
    path = store_path(kind, small_disk)
    store = open_store(kind, path, compact_bytes=64 << 10)  # compactions meet the full disk too
    ballast = fill(small_disk, leave=384 << 10)
    acknowledged: dict[str, dict] = {}
    for i in range(5000):
        item = sample_item(i, content=f"{i} " + "x" * 2000)
        try:
            store.store(item)
        except DiskFullError as exc:
            assert "disk is full" in str(exc)
            break
        acknowledged[item.id] = plain(item)
    else:
        pytest.fail("the disk never filled up")
    assert len(acknowledged) > 20
    assert state(store) == acknowledged, "the failed write changed what the store holds"
    with pytest.raises(DiskFullError):  # and again: still typed, still nothing half-written
        store.store(sample_item(99_999, content="y" * 4000))
    os.unlink(ballast)
    for i in range(10_000, 10_020):  # space is back: writes work again
        item = sample_item(i, content="after the disk filled up")
        store.store(item)
        acknowledged[item.id] = plain(item)
    store.close()
    reopened = open_store(kind, path)
    assert state(reopened) == acknowledged
    reopened.close()


@pytest.mark.parametrize("kind", KINDS)
def test_a_store_created_on_a_full_disk_works_once_space_returns(kind, small_disk) -> None:
    path = store_path(kind, small_disk)
    ballast = fill(small_disk, leave=0)
    try:
        store = open_store(kind, path)
    except DiskFullError:
        store = None  # creating it needs space (a first snapshot): refused, typed
    else:
        with pytest.raises(DiskFullError):
            store.store(sample_item(1, content="x" * 8192))
    os.unlink(ballast)
    if store is None:
        store = open_store(kind, path)
    store.store(sample_item(2))
    store.close()
    reopened = open_store(kind, path)
    assert list(state(reopened)) == ["item-00002"]
    reopened.close()


# --------------------------------------------------------------------------- sustained updates


@pytest.mark.parametrize("kind", KINDS)
def test_sustained_updates_of_a_few_ids_keep_the_files_bounded(kind, tmp_path) -> None:
    path = store_path(kind, tmp_path)
    if kind == "faiss":
        # HNSW cannot delete: each update leaves a tombstone. With the default compaction threshold
        # (16 MiB of journal), only the tombstone bound rebuilds the index and compacts.
        from memsys.adapters.faiss_store import MAX_TOMBSTONES

        options, updates, bound = {"sync": False, "index": "hnsw"}, 6_000, 4 << 20
    else:
        options, updates, bound = {"sync": False, "compact_bytes": 64 << 10}, 20_000, 512 << 10
    store = open_store(kind, path, **options)
    ids = 5
    largest = 0
    for n in range(updates):
        store.store(MemoryItem(id=f"soak-{n % ids}", content=f"update {n}", memory_type=MemoryType.WORKING,
                               metadata={"n": n}, version=n + 1))
        if n % 500 == 499:
            largest = max(largest, sum(os.path.getsize(p) for p in data_files(kind, path)))
            if kind == "faiss":
                assert store._index.ntotal <= ids + MAX_TOMBSTONES + 1, "tombstones pile up in the index"
    assert largest < bound, f"the store's files grew to {largest} bytes for {ids} items"
    final = {f"soak-{i}": f"update {updates - ids + i}" for i in range(ids)}
    store.close()
    reopened = open_store(kind, path, **options)
    assert {i: item["content"] for i, item in state(reopened).items()} == final
    if kind == "faiss":
        hits = reopened.similarity_search(list(reopened.retrieve_vector("soak-3").embedding), top_k=5)
        assert sorted(hit.id for hit in hits) == sorted(final)
    reopened.close()
