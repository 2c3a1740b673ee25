"""Shared behaviour of vector stores: embeddings, dimension checks, similarity search.

A vector store keeps each item with an embedding. ``store(item)`` embeds the
item's content with the store's embedder; ``store_vector`` takes a caller's
embedding. Scores are cosine similarity (metric "cosine") or the raw inner
product (metric "ip"); higher is closer, ties go to the smaller id.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar

from memsys.adapters._base import BaseMemoryStore
from memsys.adapters.embedders import HashingEmbedder
from memsys.domain.errors import InvalidInputError, InvalidMemoryItemError, VectorDimensionError
from memsys.domain.model import (
    JSONValue,
    MemoryItem,
    MemoryVector,
    ScoredItem,
    check_id,
    trusted_item,
    trusted_vector,
)
from memsys.domain.operations import Operation, Put
from memsys.domain.query import MemoryQuery, content_text
from memsys.ports import Capability, Embedder

METRICS = ("cosine", "ip")
#: Widest embedding a store accepts. Wider is a mistake (a count passed as a dimension), and an
#: index would allocate for it before anything checks.
MAX_DIMENSION = 65536


def check_int_arg(value: object, what: str, low: int, high: int) -> int:
    """``value`` if it is an int (not a bool) in [low, high], else InvalidInputError naming ``what``."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidInputError(f"{what} must be an int from {low} to {high}, got {value!r}")
    return value


def check_bool_arg(value: object, what: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidInputError(f"{what} must be True or False, got {value!r}")
    return value


def detached(item: MemoryItem) -> MemoryItem:
    """``item`` with content and metadata of its own, for stores that keep items in memory
    (FAISS, NetworkX, TinyDB): neither the caller who stored an item nor one who read it can then
    change what the store holds. Items whose containers are already read-only (the domain's
    frozen values) are shared as they are; only plain dicts and lists are copied."""
    content, metadata = item.content, item.metadata
    if type(metadata) is not dict and type(content) is not dict and type(content) is not list:
        return item
    return trusted_item(item.id, copy_json(content), item.memory_type.value,
                        copy_json(metadata), item.created_at, item.updated_at, item.version)  # type: ignore[arg-type]


def copy_json(value: JSONValue) -> JSONValue:
    """A deep copy of a JSON value whose containers are plain dicts and lists."""
    if isinstance(value, dict):
        return {key: copy_json(element) for key, element in value.items()}
    if isinstance(value, list):
        return [copy_json(element) for element in value]
    return value


def _best_first(hit: tuple[MemoryItem, float, Any]) -> tuple[float, str]:
    return (-hit[1], hit[0].id)


def _sorted_best_first(hits: list[tuple[MemoryItem, float, Any]]) -> bool:
    """Engines return hits best first; only ties (ordered by id) or a disorder need a sort."""
    return all(a[1] > b[1] for a, b in zip(hits, hits[1:]))


class VectorStoreBase(BaseMemoryStore):
    capabilities: ClassVar[frozenset[Capability]] = BaseMemoryStore.capabilities | {Capability.VECTOR_SEARCH}

    def __init__(self, path: str | os.PathLike[str] | None, *, embedder: Embedder | None = None,
                 dimension: int | None = None, metric: str = "cosine", name: str | None = None) -> None:
        super().__init__(path, name=name)
        # Every argument is checked before anything is built: a bad one must never reach an engine
        # (FAISS aborts the process on some) or leave a file behind.
        if not isinstance(metric, str) or metric not in METRICS:
            raise InvalidInputError(f"unknown metric {metric!r}; use one of {METRICS}")
        if dimension is not None:
            check_int_arg(dimension, "dimension", 2, MAX_DIMENSION)
        if embedder is None:
            embedder = HashingEmbedder(dimension or 384)
        if not callable(getattr(embedder, "embed", None)):
            raise InvalidInputError(f"embedder {embedder!r} has no embed(texts) method")
        check_int_arg(getattr(embedder, "dimension", None), f"the dimension of embedder {embedder!r}", 2,
                      MAX_DIMENSION)
        if dimension is not None and dimension != embedder.dimension:
            raise InvalidInputError(f"dimension {dimension} differs from the embedder's {embedder.dimension}")
        self.embedder = embedder
        self.dimension = int(embedder.dimension)
        self.metric = metric

    # --- primitives of vector engines

    def _get_embedding(self, item_id: str) -> tuple[float, ...] | None:
        raise NotImplementedError

    def _similar(self, query: Any, top_k: int, where: MemoryQuery | None,
                 embeddings: bool) -> list[tuple[MemoryItem, float, tuple[float, ...] | None]]:
        """The top_k live items closest to ``query`` (a float32 array, normalised for cosine), best
        first. With ``embeddings``, each comes with its embedding if the engine has it at hand
        (None otherwise: it is fetched after)."""
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

    def store_vectors(self, vectors: Sequence[MemoryVector]) -> list[str]:
        """Store many vectors as one batch (one engine call where the engine allows)."""
        vectors = list(vectors)
        for vector in vectors:
            if not isinstance(vector, MemoryVector):
                raise InvalidMemoryItemError(f"{self.name}: store_vectors() takes MemoryVectors, "
                                             f"got {type(vector).__name__}")
            self._check_dimension(vector.embedding, f"vector {vector.id!r}")
        self._write([Put(v.as_item(), v.embedding) for v in vectors])
        return [v.id for v in vectors]

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
        hits = self._nearest(query_embedding, top_k, query, embeddings=True)
        missing = [hit[0].id for hit in hits if hit[2] is None]
        fetched = self._call("similarity_search", lambda: {i: self._get_embedding(i) for i in missing}) \
            if missing else {}
        return [(self._as_vector(item, embedding if embedding is not None else fetched.get(item.id)), float(score))
                for item, score, embedding in hits]

    def similar_items(self, query_embedding: Sequence[float], top_k: int = 5, query: Any = None) -> list[ScoredItem]:
        """The top_k items nearest the query with their scores, best first, without their embeddings."""
        return [ScoredItem(hit[0], hit[1]) for hit in self._nearest(query_embedding, top_k, query, embeddings=False)]

    def _nearest(self, query_embedding: Sequence[float], top_k: int, query: Any,
                 embeddings: bool) -> list[tuple[MemoryItem, float, tuple[float, ...] | None]]:
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0:
            raise InvalidInputError(f"top_k must be a non-negative int, got {top_k!r}")
        vector = self._query_vector(query_embedding)
        where = None if query is None else MemoryQuery.parse(query)
        tx = self._bound_transaction()
        overlay = tx.writes if tx is not None and tx.writes else None
        fetch = top_k + (len(overlay.ops) if overlay is not None else 0)
        hits = self._call("similarity_search", self._similar, vector, fetch, where, embeddings) if fetch else []
        if overlay is not None:
            hits = [hit for hit in hits if not overlay.touches(hit[0].id)]
            for put in overlay.live_puts():
                if where is None or where.matches(put.item):
                    embedding = self._embedding_of(put)
                    hits.append((put.item, self.score(vector, embedding), embedding))
        if overlay is not None or not _sorted_best_first(hits):
            hits.sort(key=_best_first)
        return hits[:top_k]

    def _query_vector(self, query_embedding: Sequence[float]) -> Any:
        """The query as a float32 array (normalised for cosine); a typed error if it is unusable."""
        import numpy as np

        try:
            vector = np.asarray(query_embedding, dtype=np.float32)
        except (TypeError, ValueError) as exc:
            raise InvalidInputError("the query embedding is not a sequence of numbers") from exc
        if vector.ndim != 1:
            raise InvalidInputError("the query embedding must be a 1-D sequence of numbers")
        self._check_dimension(vector, "query embedding")  # type: ignore[arg-type]
        norm = float(np.sqrt(np.dot(vector, vector)))
        if not math.isfinite(norm):  # any NaN or infinity makes the norm non-finite
            raise InvalidInputError("the query embedding holds NaN or infinity")
        if self.metric == "cosine" and norm > 0:
            return vector / norm
        return vector

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
        return trusted_vector(item, tuple(embedding) if embedding is not None else ())
