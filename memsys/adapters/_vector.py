"""Shared behaviour of vector stores: embeddings, dimension checks, similarity search.

A vector store keeps each item with an embedding. ``store(item)`` embeds the
item's content with the store's embedder; ``store_vector`` takes a caller's
embedding. Scores are cosine similarity (metric "cosine") or the raw inner
product (metric "ip"); higher is closer, ties go to the smaller id.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar

from memsys.adapters._base import BaseMemoryStore
from memsys.adapters.embedders import HashingEmbedder
from memsys.domain.errors import InvalidInputError, InvalidMemoryItemError, VectorDimensionError
from memsys.domain.model import MemoryItem, MemoryVector, check_embedding, check_id
from memsys.domain.operations import Operation, Put
from memsys.domain.query import MemoryQuery, content_text
from memsys.domain.writeset import ABSENT
from memsys.ports import Capability, Embedder

METRICS = ("cosine", "ip")


class VectorStoreBase(BaseMemoryStore):
    capabilities: ClassVar[frozenset[Capability]] = BaseMemoryStore.capabilities | {Capability.VECTOR_SEARCH}

    def __init__(self, path: str | os.PathLike[str] | None, *, embedder: Embedder | None = None,
                 dimension: int | None = None, metric: str = "cosine", name: str | None = None) -> None:
        super().__init__(path, name=name)
        if embedder is None:
            embedder = HashingEmbedder(dimension or 384)
        if dimension is not None and dimension != embedder.dimension:
            raise InvalidInputError(f"dimension {dimension} differs from the embedder's {embedder.dimension}")
        if metric not in METRICS:
            raise InvalidInputError(f"unknown metric {metric!r}; use one of {METRICS}")
        self.embedder = embedder
        self.dimension = int(embedder.dimension)
        self.metric = metric

    # --- primitives of vector engines

    def _get_embedding(self, item_id: str) -> tuple[float, ...] | None:
        raise NotImplementedError

    def _similar(self, query: Any, top_k: int, where: MemoryQuery | None) -> list[tuple[MemoryItem, float]]:
        """The top_k live items closest to ``query`` (a float32 array, normalised for cosine)."""
        raise NotImplementedError

    # --- preparing writes: embeddings are computed here, once, before anything is applied

    def _prepare_all(self, ops: list[Operation]) -> list[Operation]:
        ops = super()._prepare_all(ops)
        missing = [i for i, op in enumerate(ops) if isinstance(op, Put) and op.embedding is None]
        if missing:
            vectors = self.embed_texts([content_text(ops[i].item.content) for i in missing])  # type: ignore[union-attr]
            for i, vector in zip(missing, vectors):
                ops[i] = Put(ops[i].item, tuple(vector.tolist()))  # type: ignore[union-attr]
        for op in ops:
            if isinstance(op, Put):
                self._check_dimension(op.embedding, f"embedding of {op.item.id!r}")  # type: ignore[arg-type]
        return ops

    def embed_texts(self, texts: Sequence[str]) -> Any:
        import numpy as np

        vectors = np.asarray(self.embedder.embed(list(texts)), dtype=np.float32)
        if vectors.shape != (len(texts), self.dimension):
            raise VectorDimensionError(f"{self.name}: embedder returned shape {vectors.shape}, "
                                       f"expected ({len(texts)}, {self.dimension})",
                                       expected=self.dimension, got=vectors.shape[-1])
        return vectors

    def _check_dimension(self, embedding: Sequence[float], what: str) -> None:
        if len(embedding) != self.dimension:
            raise VectorDimensionError(f"{self.name}: {what} has {len(embedding)} dimensions, "
                                       f"the store has {self.dimension}", expected=self.dimension,
                                       got=len(embedding))

    def _current_state(self, item_id: str) -> Put | None:
        item = self._get(item_id)
        return None if item is None else Put(item, self._get_embedding(item_id))

    # --- VectorStore

    def store_vector(self, vector: MemoryVector) -> str:
        if not isinstance(vector, MemoryVector):
            raise InvalidMemoryItemError(f"{self.name}: store_vector() takes a MemoryVector, "
                                         f"got {type(vector).__name__}")
        self._check_dimension(vector.embedding, f"vector {vector.id!r}")
        self._write([Put(vector.as_item(), vector.embedding)])
        return vector.id

    def retrieve_vector(self, vector_id: str) -> MemoryVector | None:
        check_id(vector_id)
        tx = self._bound_transaction()
        if tx is not None:
            put = tx.writes.buffered_put(vector_id)
            if put is not None or tx.writes.touches(vector_id):
                return None if put is None else self._as_vector(put.item, self._embedding_of(put))

        def read() -> MemoryVector | None:
            item = self._get(vector_id)
            if item is None:
                return None
            return self._as_vector(item, self._get_embedding(vector_id))

        return self._call("retrieve_vector", read)

    def delete_vector(self, vector_id: str) -> bool:
        return self.delete(vector_id)

    def similarity_search(self, query_embedding: Sequence[float], top_k: int = 5,
                          query: Any = None) -> list[MemoryVector]:
        return [vector for vector, _ in self.similarity_search_with_scores(query_embedding, top_k, query)]

    def similarity_search_with_scores(self, query_embedding: Sequence[float], top_k: int = 5,
                                      query: Any = None) -> list[tuple[MemoryVector, float]]:
        import numpy as np

        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0:
            raise InvalidInputError(f"top_k must be a non-negative int, got {top_k!r}")
        vector = np.asarray(check_embedding(query_embedding, "query embedding"), dtype=np.float32)
        self._check_dimension(vector, "query embedding")  # type: ignore[arg-type]
        where = None if query is None else MemoryQuery.parse(query)
        if self.metric == "cosine":
            norm = float(np.linalg.norm(vector))
            vector = vector / norm if norm > 0 else vector
        tx = self._bound_transaction()
        overlay = tx.writes if tx is not None and tx.writes else None
        fetch = top_k + (len(overlay.ops) if overlay is not None else 0)
        hits = self._call("similarity_search", self._similar, vector, fetch, where) if fetch else []
        if overlay is not None:
            hits = [(item, score) for item, score in hits if not overlay.touches(item.id)]
            for put in overlay.live_puts():
                if where is None or where.matches(put.item):
                    hits.append((put.item, self.score(vector, self._embedding_of(put))))
        hits.sort(key=lambda hit: (-hit[1], hit[0].id))
        hits = hits[:top_k]
        embeddings = self._call("similarity_search", lambda: {i.id: self._get_embedding(i.id) for i, _ in hits
                                                              if overlay is None or not overlay.touches(i.id)})
        result = []
        for item, score in hits:
            embedding = embeddings.get(item.id)
            if embedding is None and overlay is not None:
                embedding = self._embedding_of(overlay.buffered_put(item.id))  # type: ignore[arg-type]
            result.append((self._as_vector(item, embedding), float(score)))
        return result

    def score(self, query: Any, embedding: Sequence[float]) -> float:
        """Similarity of a prepared query vector and a stored embedding, as the engine computes it."""
        import numpy as np

        e = np.asarray(embedding, dtype=np.float32)
        if self.metric == "cosine":
            norm = float(np.linalg.norm(e))
            e = e / norm if norm > 0 else e
        return float(np.dot(query, e))

    def _embedding_of(self, put: Put) -> tuple[float, ...]:
        if put.embedding is not None:
            return put.embedding
        return tuple(self.embed_texts([content_text(put.item.content)])[0].tolist())

    @staticmethod
    def _as_vector(item: MemoryItem, embedding: Iterable[float] | None) -> MemoryVector:
        return MemoryVector(id=item.id, content=item.content, embedding=tuple(embedding or ()),
                            metadata=item.metadata, created_at=item.created_at, memory_type=item.memory_type)
