from __future__ import annotations

import json
import os

import pytest

from memsys import CorruptStoreError, MemoryType
from memsys.adapters.tinydb_store import TinyDBMemoryAdapter
from memsys.testing import MemoryStoreContract, sample_item


class TestTinyDBContract(MemoryStoreContract):
    def create_store(self, path):
        return TinyDBMemoryAdapter(path=path)


def test_file_is_a_tinydb_database_with_enum_values(tmp_path) -> None:
    """The files stay a TinyDB database: TinyDB itself reads (and writes) them through JournalStorage."""
    path = tmp_path / "memory.json"
    store = TinyDBMemoryAdapter(path=path)
    store.store(sample_item(1, memory_type=MemoryType.EXPAND_RESULTS))
    store.close()
    import tinydb

    from memsys.adapters.tinydb_store import ItemTable, JournalStorage

    db = tinydb.TinyDB(path, storage=JournalStorage)
    db.table_class = ItemTable
    table = db.table("memory_items")
    assert len(table) == 1
    assert table.get(doc_id="item-00001")["memory_type"] == "expand_results"
    table.update({"content": "changed through TinyDB"}, doc_ids=["item-00001"])
    db.close()
    assert TinyDBMemoryAdapter(path=path).retrieve("item-00001").content == "changed through TinyDB"


def test_legacy_records_with_enum_names_load(tmp_path) -> None:
    path = tmp_path / "legacy.json"
    path.write_text(json.dumps({"memory_items": {"old-1": {
        "id": "old-1", "content": "from devsynth", "memory_type": "EXPAND_RESULTS", "metadata": {"k": 1},
        "created_at": "2024-03-01T12:00:00"}}}))
    store = TinyDBMemoryAdapter(path=path)
    item = store.retrieve("old-1")
    assert item.memory_type is MemoryType.EXPAND_RESULTS and item.metadata == {"k": 1}
    assert store.search({"memory_type": "expand_results"}) == [item]


def test_unreadable_legacy_record_is_a_typed_error_naming_it(tmp_path) -> None:
    path = tmp_path / "legacy.json"
    path.write_text(json.dumps({"memory_items": {"bad": {"id": "bad", "content": "x", "memory_type": "NOPE"}}}))
    store = TinyDBMemoryAdapter(path=path)
    with pytest.raises(CorruptStoreError, match="'bad'"):
        store.retrieve("bad")


def test_a_failed_write_leaves_files_and_memory_at_the_last_good_state(small_disk) -> None:
    from memsys import DiskFullError
    from memsys.testing.disk import fill

    path = os.path.join(small_disk, "memory.json")
    store = TinyDBMemoryAdapter(path=path)
    store.store(sample_item(1))
    before = {name: open(os.path.join(small_disk, name), "rb").read() for name in os.listdir(small_disk)}
    ballast = fill(small_disk)  # a real full disk
    with pytest.raises(DiskFullError, match="disk is full"):
        store.store_many([sample_item(2, content="x" * 8192), sample_item(3)])
    os.unlink(ballast)
    assert {name: open(os.path.join(small_disk, name), "rb").read() for name in os.listdir(small_disk)} == before
    assert [i.id for i in store.search({})] == ["item-00001"]


def test_tinydb_api_writes_through_journal_storage_survive_reopen_exactly(tmp_path) -> None:
    """TinyDB's own API on JournalStorage: only changed documents are journaled, and a change JSON
    tells apart but == does not (1, 1.0, True) still reaches the disk."""
    import tinydb

    from memsys.adapters.tinydb_store import JournalStorage

    path = tmp_path / "plain.db"
    db = tinydb.TinyDB(path, storage=JournalStorage)
    docs = db.table("docs")
    first = docs.insert({"n": 1, "tags": ["a"]})
    docs.insert_multiple([{"n": k} for k in range(2, 50)])
    docs.update({"n": True}, doc_ids=[first])
    db.table("scratch").insert({"x": 1})
    db.drop_table("scratch")
    docs.remove(doc_ids=[2])
    journal = (tmp_path / "plain.db.journal").stat().st_size
    docs.update({"n": 1.0}, doc_ids=[first])
    assert (tmp_path / "plain.db.journal").stat().st_size - journal < 200, "a one-field update rewrote the table"
    db.close()
    db = tinydb.TinyDB(path, storage=JournalStorage)
    assert db.tables() == {"docs"}
    got = db.table("docs").get(doc_id=first)
    assert got == {"n": 1.0, "tags": ["a"]} and type(got["n"]) is float
    assert len(db.table("docs")) == 48 and db.table("docs").get(doc_id=2) is None
    db.close()
