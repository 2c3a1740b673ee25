from __future__ import annotations

import threading

from memsys.adapters.lmdb_store import LMDBMemoryAdapter
from memsys.testing import MemoryStoreContract, sample_item


class TestLMDBContract(MemoryStoreContract):
    def create_store(self, path):
        return LMDBMemoryAdapter(path=path, map_size=1 << 20)


class TestLMDBNoSyncContract(MemoryStoreContract):
    def create_store(self, path):
        return LMDBMemoryAdapter(path=path, sync=False)


def test_map_grows_instead_of_failing(tmp_path) -> None:
    store = LMDBMemoryAdapter(path=tmp_path / "db", map_size=64 << 10)
    items = [sample_item(i) for i in range(400)]
    store.store_many(items)
    for item in items[:50]:
        store.store(item.replace(content="x" * 20_000))
    assert store.count() == 400
    store.close()
    assert LMDBMemoryAdapter(path=tmp_path / "db").retrieve("item-00010").content == "x" * 20_000


def test_reads_and_writes_inside_a_transaction_never_nest_write_transactions(tmp_path) -> None:
    store = LMDBMemoryAdapter(path=tmp_path / "db")
    done = threading.Event()

    def work() -> None:
        tx = store.begin_transaction()
        store.store(sample_item(1))
        assert store.retrieve("item-00001") == sample_item(1)
        store.store(sample_item(2))
        store.delete("item-00001")
        store.commit(tx)
        done.set()

    worker = threading.Thread(target=work)
    worker.start()
    worker.join(timeout=20)
    assert done.is_set(), "a write inside an LMDB transaction hung"
    assert [i.id for i in store.search({})] == ["item-00002"]
