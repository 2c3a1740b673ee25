from __future__ import annotations

import pytest

from memsys import InvalidInputError
from memsys.adapters.chroma_store import ChromaDBVectorStore
from memsys.ports import Capability
from memsys.testing import VectorStoreContract, sample_item


class TestChromaEmbeddedContract(VectorStoreContract):
    sustained_updates = 150  # a Chroma write costs ~60 ms; `memsys chaos run` soaks longer

    def create_store(self, path):
        return ChromaDBVectorStore(path=path, dimension=32)


class TestChromaServerContract(VectorStoreContract):
    """The same contract against a real `chroma run` server on a loopback port."""

    sustained_updates = 150

    @pytest.fixture(autouse=True)
    def _server(self, chroma_server):
        self.server = chroma_server

    def create_store(self, path):
        return ChromaDBVectorStore(path=path, host=self.server.host, port=self.server.port, dimension=32)


def test_server_mode_declares_remote_and_reaches_the_same_collection(chroma_server, tmp_path) -> None:
    store = ChromaDBVectorStore(path=tmp_path / "ns", server=chroma_server.url, dimension=16)
    assert Capability.REMOTE in store.capabilities and Capability.PERSISTENCE not in store.capabilities
    store.store(sample_item(1))
    store.close()
    again = ChromaDBVectorStore(path=tmp_path / "ns", host="127.0.0.1", port=chroma_server.port, dimension=16)
    assert again.retrieve("item-00001") == sample_item(1)


def test_chroma_is_never_asked_to_embed(tmp_path, monkeypatch) -> None:
    import chromadb.utils.embedding_functions as functions

    def forbidden(*args, **kwargs):
        raise AssertionError("Chroma's default embedding function was called")

    monkeypatch.setattr(functions.DefaultEmbeddingFunction, "__call__", forbidden, raising=False)
    store = ChromaDBVectorStore(path=tmp_path / "c", dimension=16)
    store.store_many([sample_item(i) for i in range(20)])
    assert len(store.similarity_search([0.1] * 16, top_k=5)) == 5


def test_reopening_with_another_dimension_is_refused(tmp_path) -> None:
    ChromaDBVectorStore(path=tmp_path / "c", dimension=16).close()
    with pytest.raises(InvalidInputError, match="16-dimension"):
        ChromaDBVectorStore(path=tmp_path / "c", dimension=8)


def test_batches_larger_than_the_client_maximum_are_split(tmp_path) -> None:
    store = ChromaDBVectorStore(path=tmp_path / "c", dimension=8)
    store._batch = 7  # as if the client's maximum were 7
    items = [sample_item(i) for i in range(30)]
    store.store_many(items)
    assert store.count() == 30 and len(store.retrieve_many([i.id for i in items])) == 30
    assert store.delete_many([i.id for i in items[:20]]) == 20 and store.count() == 10
    assert len(list(store.iter_items())) == 10


def _failing_nth_call(method, n: int):
    calls = {"count": 0}

    def wrapper(*args, **kwargs):
        calls["count"] += 1
        if calls["count"] == n:
            raise ConnectionError("injected: connection reset mid-batch")
        return method(*args, **kwargs)

    return wrapper


def test_a_batch_that_fails_part_way_is_undone_from_before_images(tmp_path, monkeypatch) -> None:
    from memsys import StoreUnavailableError
    from memsys.testing import dump

    store = ChromaDBVectorStore(path=tmp_path / "c", dimension=8)
    store.store_many([sample_item(i) for i in range(4)])
    before = dump(store)
    store._batch = 2  # the next batch needs several upsert calls
    monkeypatch.setattr(store._collection, "upsert", _failing_nth_call(store._collection.upsert, 2))
    batch = [sample_item(i, content=f"changed {i}") for i in range(2)] + [sample_item(i) for i in range(10, 13)]
    with pytest.raises(StoreUnavailableError):
        store.store_many(batch)
    monkeypatch.undo()
    store._batch = 100
    assert dump(store) == before, "a failed multi-call batch left part of its writes behind"


def test_a_compensation_that_cannot_run_now_runs_before_the_next_write(tmp_path, monkeypatch) -> None:
    from memsys.testing import dump

    store = ChromaDBVectorStore(path=tmp_path / "c", dimension=8)
    store.store_many([sample_item(i) for i in range(3)])
    before = dump(store)
    store._batch = 2
    upsert = store._collection.upsert
    state = {"calls": 0}

    def flaky(*args, **kwargs):
        state["calls"] += 1
        if state["calls"] >= 2:  # the second call of the batch, and the compensation, fail
            raise ConnectionError("injected: store went away")
        return upsert(*args, **kwargs)

    monkeypatch.setattr(store._collection, "upsert", flaky)
    with pytest.raises(Exception):
        store.store_many([sample_item(i, content="new") for i in range(3)] + [sample_item(20)])
    assert store._pending_compensations, "the failed compensation was dropped"
    monkeypatch.undo()
    store._batch = 100
    store.store(sample_item(30))  # the queued compensation runs first
    assert not store._pending_compensations
    expected = dict(before)
    expected[sample_item(30).id] = sample_item(30).to_dict()
    assert dump(store) == expected
