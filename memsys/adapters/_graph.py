"""Shared behaviour of graph stores: typed directed relationships and traversal.

At most one edge exists per (source, target, type); adding it again replaces
its properties. Deleting an item deletes every edge that touches it.
Traversal results are ordered by (distance, id); a shortest path is a list of
ids from source to target, or None when there is none.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from typing import ClassVar

from memsys.adapters._base import BaseMemoryStore
from memsys.adapters._vector import copy_json
from memsys.domain.errors import InvalidInputError, NotFoundError
from memsys.domain.model import JSONValue, MemoryItem, Relationship, check_id
from memsys.domain.operations import Delete, Operation, Put, Relate, Unrelate
from memsys.domain.writeset import ABSENT
from memsys.ports import Capability

DIRECTIONS = ("out", "in", "both")


def edge(source_id: str, target_id: str, rel_type: str, properties: dict[str, JSONValue] | None) -> Relationship:
    """A Relationship for an edge a store holds in memory, with properties of its own: changing
    the returned properties never changes the store's edge."""
    if type(properties) is dict:  # read-only (frozen) properties need no copy
        properties = copy_json(properties)  # type: ignore[assignment]
    return Relationship(source_id, target_id, rel_type, properties)


class GraphStoreBase(BaseMemoryStore):
    capabilities: ClassVar[frozenset[Capability]] = BaseMemoryStore.capabilities | {Capability.GRAPH}

    # --- primitives of graph engines

    def _get_edge(self, source_id: str, target_id: str, rel_type: str) -> Relationship | None:
        raise NotImplementedError

    def _edges(self, item_id: str, direction: str, rel_type: str | None) -> list[Relationship]:
        raise NotImplementedError

    def _scan_relationships(self) -> Iterable[Relationship]:
        raise NotImplementedError

    # --- preparing writes: an edge needs both ends, in the store or earlier in the batch

    def _prepare_all(self, ops: list[Operation]) -> list[Operation]:
        ops = super()._prepare_all(ops)
        present: dict[str, bool] = {}
        for op in ops:
            if isinstance(op, Put):
                present[op.item.id] = True
            elif isinstance(op, Delete):
                present[op.item_id] = False
            elif isinstance(op, Relate):
                for end in (op.relationship.source_id, op.relationship.target_id):
                    if end not in present:
                        present[end] = self._get(end) is not None
                    if not present[end]:
                        raise NotFoundError(f"{self.name}: relationship {op.relationship.key} needs item "
                                            f"{end!r}, which does not exist")
        return ops

    def _snapshot(self) -> list[Operation]:
        return super()._snapshot() + [Relate(r) for r in self._scan_relationships()]

    # --- GraphStore

    def add_relationship(self, source_id: str, target_id: str, rel_type: str,
                         properties: dict | None = None) -> Relationship:
        relationship = Relationship(source_id, target_id, rel_type, properties)
        self._write([Relate(relationship)])
        return relationship

    def remove_relationship(self, source_id: str, target_id: str, rel_type: str) -> bool:
        op = Unrelate(check_id(source_id, "source_id"), check_id(target_id, "target_id"),
                      check_id(rel_type, "rel_type"))
        existed = self.get_relationship(source_id, target_id, rel_type) is not None
        self._write([op])
        return existed

    def get_relationship(self, source_id: str, target_id: str, rel_type: str) -> Relationship | None:
        key = (check_id(source_id, "source_id"), check_id(target_id, "target_id"), check_id(rel_type, "rel_type"))
        tx = self._bound_transaction()
        if tx is not None:
            state = tx.writes.edge_state(key)
            if state is not ABSENT:
                return state  # type: ignore[return-value]
            if {source_id, target_id} & tx.writes.edge_cut_ids():
                return None
        return self._call("get_relationship", self._get_edge, *key)

    def get_relationships(self, item_id: str, direction: str = "out",
                          rel_type: str | None = None) -> list[Relationship]:
        check_id(item_id)
        _check_direction(direction)
        if rel_type is not None:
            check_id(rel_type, "rel_type")
        edges = self._call("get_relationships", self._edges, item_id, direction, rel_type)
        tx = self._bound_transaction()
        if tx is not None and tx.writes:
            edges = self._overlay_edges(tx.writes, edges, item_id, direction, rel_type)
        return sorted(edges, key=lambda r: (r.rel_type, r.source_id, r.target_id))

    def neighbors(self, item_id: str, depth: int = 1, direction: str = "out",
                  rel_type: str | None = None) -> list[MemoryItem]:
        """Items reachable from ``item_id`` in 1..depth hops, nearest first, then by id."""
        distances = self._reach(item_id, depth, direction, rel_type, stop_at=None)
        ids = sorted((d, i) for i, d in distances.items() if i != item_id)
        found = self.retrieve_many([i for _, i in ids])
        return [found[i] for _, i in ids if i in found]

    def shortest_path(self, source_id: str, target_id: str, direction: str = "out",
                      rel_type: str | None = None) -> list[str] | None:
        check_id(target_id, "target_id")
        if self.retrieve(source_id) is None or self.retrieve(target_id) is None:
            return None
        parents: dict[str, str | None] = {}
        self._reach(source_id, None, direction, rel_type, stop_at=target_id, parents=parents)
        if target_id not in parents:
            return None
        path: list[str] = [target_id]
        while parents[path[-1]] is not None:
            path.append(parents[path[-1]])  # type: ignore[arg-type]
        return path[::-1]

    def _reach(self, start: str, depth: int | None, direction: str, rel_type: str | None,
               stop_at: str | None, parents: dict[str, str | None] | None = None) -> dict[str, int]:
        check_id(start)
        _check_direction(direction)
        if depth is not None and (isinstance(depth, bool) or not isinstance(depth, int) or depth < 1):
            raise InvalidInputError(f"depth must be an int >= 1, got {depth!r}")
        parents = {} if parents is None else parents
        parents[start] = None
        distances = {start: 0}
        frontier = deque([start])
        while frontier:
            node = frontier.popleft()
            if node == stop_at or (depth is not None and distances[node] >= depth):
                continue
            for next_id in sorted(_far_ends(self.get_relationships(node, direction, rel_type), node)):
                if next_id not in distances:
                    distances[next_id] = distances[node] + 1
                    parents[next_id] = node
                    frontier.append(next_id)
        return distances

    @staticmethod
    def _overlay_edges(writes, edges: list[Relationship], item_id: str, direction: str,
                       rel_type: str | None) -> list[Relationship]:
        deleted = writes.edge_cut_ids()
        by_key = {r.key: r for r in edges if r.source_id not in deleted and r.target_id not in deleted}
        for key, state in writes.edges().items():
            touches = (direction in ("out", "both") and key[0] == item_id) or \
                      (direction in ("in", "both") and key[1] == item_id)
            if not touches or (rel_type is not None and key[2] != rel_type):
                continue
            if state is None:
                by_key.pop(key, None)
            else:
                by_key[key] = state
        return list(by_key.values())


def _far_ends(edges: Sequence[Relationship], node: str) -> set[str]:
    ends = set()
    for r in edges:
        if r.source_id == node:
            ends.add(r.target_id)
        if r.target_id == node:
            ends.add(r.source_id)
    return ends


def _check_direction(direction: str) -> None:
    if direction not in DIRECTIONS:
        raise InvalidInputError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
