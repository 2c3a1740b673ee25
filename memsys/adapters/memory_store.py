"""The in-memory reference store: the model every real adapter is checked against.

It implements every capability (items, vectors with exact search, graph) in
plain dicts, with the semantics the contracts define. ``path`` names a
process-wide namespace: a second InMemoryStore on the same path sees the same
data, as a reopened file store would; nothing survives the process.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar

from memsys.adapters._graph import GraphStoreBase
from memsys.adapters._vector import VectorStoreBase
from memsys.domain.model import MemoryItem, Relationship
from memsys.domain.operations import Delete, Operation, Put, Relate, Unrelate
from memsys.domain.query import MemoryQuery
from memsys.ports import Capability, Embedder


class _State:
    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.items: dict[str, MemoryItem] = {}
        self.vectors: dict[str, tuple[float, ...]] = {}
        self.out_edges: dict[str, dict[tuple[str, str], Relationship]] = {}
        self.in_edges: dict[str, dict[tuple[str, str], Relationship]] = {}


class InMemoryStore(VectorStoreBase, GraphStoreBase):
    atomic_apply = True  # one engine transaction / one atomic file write per batch
    backend = "memory"
    capabilities: ClassVar[frozenset[Capability]] = VectorStoreBase.capabilities | GraphStoreBase.capabilities
    #: ``path`` names an in-process namespace, not a file: every opener shares one state and one lock.
    exclusive_path: ClassVar[bool] = False

    _registry: ClassVar[dict[str, _State]] = {}
    _registry_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, path: str | os.PathLike[str] | None = None, *, embedder: Embedder | None = None,
                 dimension: int | None = None, metric: str = "cosine", name: str | None = None) -> None:
        super().__init__(path, embedder=embedder, dimension=dimension, metric=metric, name=name)
        if self.path is None:
            self._state = _State()
        else:
            key = os.path.abspath(self.path)
            with self._registry_lock:
                self._state = self._registry.setdefault(key, _State())
        self._lock = self._state.lock

    @classmethod
    def forget(cls, path: str | os.PathLike[str]) -> None:
        """Drop the namespace at ``path`` (what deleting the files is for a file store)."""
        with cls._registry_lock:
            cls._registry.pop(os.path.abspath(os.fspath(path)), None)

    # --- MemoryStore primitives

    def _get(self, item_id: str) -> MemoryItem | None:
        return self._state.items.get(item_id)

    def _scan(self) -> Iterable[MemoryItem]:
        return list(self._state.items.values())

    def _count(self) -> int:
        return len(self._state.items)

    def _close(self) -> None:
        pass

    def _apply(self, ops: Sequence[Operation], durable: bool) -> None:
        s = self._state
        for op in ops:
            if isinstance(op, Put):
                s.items[op.item.id] = op.item
                if op.embedding is not None:
                    s.vectors[op.item.id] = op.embedding
            elif isinstance(op, Delete):
                s.items.pop(op.item_id, None)
                s.vectors.pop(op.item_id, None)
                for (target, rel_type) in list(s.out_edges.pop(op.item_id, {})):
                    s.in_edges.get(target, {}).pop((op.item_id, rel_type), None)
                for (source, rel_type) in list(s.in_edges.pop(op.item_id, {})):
                    s.out_edges.get(source, {}).pop((op.item_id, rel_type), None)
            elif isinstance(op, Relate):
                r = op.relationship
                if r.source_id in s.items and r.target_id in s.items:
                    s.out_edges.setdefault(r.source_id, {})[(r.target_id, r.rel_type)] = r
                    s.in_edges.setdefault(r.target_id, {})[(r.source_id, r.rel_type)] = r
            elif isinstance(op, Unrelate):
                s.out_edges.get(op.source_id, {}).pop((op.target_id, op.rel_type), None)
                s.in_edges.get(op.target_id, {}).pop((op.source_id, op.rel_type), None)

    # --- vectors

    def _get_embedding(self, item_id: str) -> tuple[float, ...] | None:
        return self._state.vectors.get(item_id)

    def _similar(self, query: Any, top_k: int, where: MemoryQuery | None, embeddings: bool) -> list[tuple[Any, ...]]:
        hits = [(item, self.score(query, self._state.vectors[item.id]), self._state.vectors[item.id])
                for item in self._state.items.values()
                if item.id in self._state.vectors and (where is None or where.matches(item))]
        hits.sort(key=lambda hit: (-hit[1], hit[0].id))
        return hits[:top_k]

    # --- graph

    def _get_edge(self, source_id: str, target_id: str, rel_type: str) -> Relationship | None:
        return self._state.out_edges.get(source_id, {}).get((target_id, rel_type))

    def _edges(self, item_id: str, direction: str, rel_type: str | None) -> list[Relationship]:
        edges: list[Relationship] = []
        if direction in ("out", "both"):
            edges.extend(self._state.out_edges.get(item_id, {}).values())
        if direction in ("in", "both"):
            edges.extend(r for r in self._state.in_edges.get(item_id, {}).values()
                         if direction == "in" or r.source_id != r.target_id)
        return [r for r in edges if rel_type is None or r.rel_type == rel_type]

    def _scan_relationships(self) -> Iterable[Relationship]:
        return [r for edges in self._state.out_edges.values() for r in edges.values()]
