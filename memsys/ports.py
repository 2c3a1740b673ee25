"""Ports: what a store is, as typing.Protocols, and the capabilities it declares.

A store declares its capabilities in ``capabilities``; callers (and the
conformance kit) check a capability instead of probing for methods, and a
missing one is an ``UnsupportedCapabilityError`` or a skip with a reason,
never a silent pass.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from enum import Enum
from typing import Any, Protocol, runtime_checkable

from memsys.domain.model import MemoryItem, MemoryVector, Relationship
from memsys.domain.operations import Operation


class Capability(str, Enum):
    #: Data survives ``close()`` and a new process opening the same path.
    PERSISTENCE = "persistence"
    #: begin_transaction / prepare_commit / commit / rollback on this store alone.
    TRANSACTIONS = "transactions"
    #: Those transactions ride on the engine's own (LMDB, DuckDB, Kuzu).
    NATIVE_TRANSACTIONS = "native_transactions"
    #: snapshot() / restore(): a whole-store copy, as a tool (never the commit path).
    SNAPSHOT = "snapshot"
    #: Embeddings and similarity search (the VectorStore protocol).
    VECTOR_SEARCH = "vector_search"
    #: Typed directed relationships and traversal (the GraphStore protocol).
    GRAPH = "graph"
    #: Filters pushed down to the engine and read-only SQL over items.
    STRUCTURED_QUERY = "structured_query"
    #: Talks to a server over the network; every call has a deadline.
    REMOTE = "remote"


@runtime_checkable
class MemoryStore(Protocol):
    """What every store does, as the Memory Integration Guide names it."""

    capabilities: frozenset[Capability]

    def store(self, item: MemoryItem) -> str: ...
    def retrieve(self, item_id: str) -> MemoryItem | None: ...
    def search(self, query: Any) -> list[MemoryItem]: ...
    def delete(self, item_id: str) -> bool: ...
    def close(self) -> None: ...


@runtime_checkable
class BatchStore(MemoryStore, Protocol):
    def store_many(self, items: Sequence[MemoryItem]) -> list[str]: ...
    def retrieve_many(self, item_ids: Sequence[str]) -> dict[str, MemoryItem]: ...
    def delete_many(self, item_ids: Sequence[str]) -> int: ...
    def iter_items(self) -> Iterator[MemoryItem]: ...
    def count(self) -> int: ...


@runtime_checkable
class TransactionalStore(MemoryStore, Protocol):
    """The guide's per-adapter transaction methods.

    Between begin_transaction and commit/rollback, writes made on the calling
    thread are buffered: other threads do not see them, the calling thread does.
    """

    def begin_transaction(self, transaction_id: str | None = None) -> str: ...
    def prepare_commit(self, transaction_id: str) -> None: ...
    def commit(self, transaction_id: str) -> None: ...
    def rollback(self, transaction_id: str) -> None: ...


@runtime_checkable
class Participant(Protocol):
    """What the cross-store coordinator needs from a store.

    ``prepare_ops`` validates and completes operations (embeddings, endpoint
    checks) without changing the store; ``apply_prepared`` applies them,
    atomically where the engine allows, and idempotently always, so a redo
    after a crash converges. ``durable=False`` lets a store skip its own sync
    because the coordinator log already holds the writes; ``flush`` then makes
    everything durable before the log is compacted.
    """

    def prepare_ops(self, ops: Sequence[Operation]) -> list[Operation]: ...
    def apply_prepared(self, ops: Sequence[Operation], *, durable: bool = True) -> None: ...
    def flush(self) -> None: ...


@runtime_checkable
class SnapshotStore(Protocol):
    def snapshot(self) -> list[Operation]: ...
    def restore(self, snapshot: Sequence[Operation]) -> None: ...


@runtime_checkable
class VectorStore(MemoryStore, Protocol):
    dimension: int

    def store_vector(self, vector: MemoryVector) -> str: ...
    def retrieve_vector(self, vector_id: str) -> MemoryVector | None: ...
    def delete_vector(self, vector_id: str) -> bool: ...
    def similarity_search(self, query_embedding: Sequence[float], top_k: int = 5,
                          query: Any = None) -> list[MemoryVector]: ...
    def similarity_search_with_scores(self, query_embedding: Sequence[float], top_k: int = 5,
                                      query: Any = None) -> list[tuple[MemoryVector, float]]: ...


@runtime_checkable
class GraphStore(MemoryStore, Protocol):
    def add_relationship(self, source_id: str, target_id: str, rel_type: str,
                         properties: dict | None = None) -> Relationship: ...
    def remove_relationship(self, source_id: str, target_id: str, rel_type: str) -> bool: ...
    def get_relationships(self, item_id: str, direction: str = "out",
                          rel_type: str | None = None) -> list[Relationship]: ...
    def neighbors(self, item_id: str, depth: int = 1, direction: str = "out",
                  rel_type: str | None = None) -> list[MemoryItem]: ...
    def shortest_path(self, source_id: str, target_id: str, direction: str = "out",
                      rel_type: str | None = None) -> list[str] | None: ...


@runtime_checkable
class StructuredQueryStore(MemoryStore, Protocol):
    def query_sql(self, sql: str, params: Sequence[Any] | None = None) -> list[dict[str, Any]]: ...


@runtime_checkable
class Embedder(Protocol):
    """Turns text into vectors of a fixed dimension; deterministic for a given name."""

    dimension: int
    name: str

    def embed(self, texts: Sequence[str]) -> Any: ...  # float32 array of shape (len(texts), dimension)


def has_capability(store: object, capability: Capability) -> bool:
    return capability in getattr(store, "capabilities", frozenset())
