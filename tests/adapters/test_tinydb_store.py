from __future__ import annotations

import json

import pytest

from memsys import CorruptStoreError, MemoryType
from memsys.adapters.tinydb_store import TinyDBMemoryAdapter
from memsys.testing import MemoryStoreContract, sample_item


class TestTinyDBContract(MemoryStoreContract):
    def create_store(self, path):
        return TinyDBMemoryAdapter(path=path)


def test_file_is_plain_tinydb_json_with_enum_values(tmp_path) -> None:
    path = tmp_path / "memory.json"
    store = TinyDBMemoryAdapter(path=path)
    store.store(sample_item(1, memory_type=MemoryType.EXPAND_RESULTS))
    data = json.loads(path.read_text())
    assert data["memory_items"]["item-00001"]["memory_type"] == "expand_results"
    import tinydb

    assert len(tinydb.TinyDB(path).table("memory_items")) == 1


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


def test_a_failed_write_leaves_file_and_memory_at_the_last_good_state(tmp_path, monkeypatch) -> None:
    path = tmp_path / "memory.json"
    store = TinyDBMemoryAdapter(path=path)
    store.store(sample_item(1))
    before = path.read_bytes()

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("memsys.adapters.tinydb_store.atomic_write", disk_full)
    with pytest.raises(Exception) as failure:
        store.store_many([sample_item(2), sample_item(3)])
    assert "No space left" in str(failure.value)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert [i.id for i in store.search({})] == ["item-00001"]
