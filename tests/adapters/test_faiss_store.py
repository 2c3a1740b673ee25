from __future__ import annotations

import numpy as np
import pytest

from memsys import InvalidInputError
from memsys.adapters.faiss_store import FAISSVectorStore
from memsys.domain.model import MemoryVector
from memsys.testing import VectorStoreContract


class TestFAISSFlatContract(VectorStoreContract):
    def create_store(self, path):
        return FAISSVectorStore(path=path, dimension=32)


class TestFAISSHNSWContract(VectorStoreContract):
    def create_store(self, path):
        return FAISSVectorStore(path=path, dimension=32, index="hnsw")


class TestFAISSInnerProductContract(VectorStoreContract):
    def create_store(self, path):
        return FAISSVectorStore(path=path, dimension=32, metric="ip", compact_bytes=4096)


def _vectors(n: int, d: int = 16, seed: int = 3) -> list[MemoryVector]:
    rng = np.random.default_rng(seed)
    return [MemoryVector(id=f"v{i}", content=f"c{i}", embedding=rng.normal(size=d).tolist()) for i in range(n)]


def test_hnsw_tombstones_are_dropped_by_compaction_and_survive_reopen(tmp_path) -> None:
    store = FAISSVectorStore(path=tmp_path / "f", dimension=16, index="hnsw")
    vectors = _vectors(100)
    store.store_many([v.as_item() for v in vectors])  # embedded from content
    for v in vectors:
        store.store_vector(v)  # updates: every old label becomes a tombstone
    assert store._index.ntotal == 200 and len(store._tombstones) == 100
    store.compact()
    assert store._index.ntotal == 100 and not store._tombstones
    hits = store.similarity_search(list(vectors[7].embedding), top_k=5)
    assert hits[0].id == "v7" and len(hits) == 5
    store.close()
    reopened = FAISSVectorStore(path=tmp_path / "f", dimension=16, index="hnsw")
    assert reopened.retrieve_vector("v9").embedding == vectors[9].embedding


def test_reopening_with_another_dimension_or_metric_is_refused(tmp_path) -> None:
    FAISSVectorStore(path=tmp_path / "f", dimension=16).close()
    with pytest.raises(InvalidInputError, match="dimension=16"):
        FAISSVectorStore(path=tmp_path / "f", dimension=8)
    with pytest.raises(InvalidInputError, match="metric='cosine'"):
        FAISSVectorStore(path=tmp_path / "f", dimension=16, metric="ip")
