"""A transaction's buffered writes, and how reads inside the transaction see them.

Writes are buffered until commit, so nobody outside the transaction sees them;
the transaction itself reads through this overlay and sees its own writes.
"""

from __future__ import annotations

from collections.abc import Iterable

from memsys.domain.model import MemoryItem, Relationship
from memsys.domain.operations import Delete, Operation, Put, Relate, Unrelate
from memsys.domain.query import MemoryQuery

_ABSENT = object()


class WriteSet:
    def __init__(self) -> None:
        self.ops: list[Operation] = []
        self._items: dict[str, Put | None] = {}
        self._edges: dict[tuple[str, str, str], Relationship | None] = {}
        self._ever_deleted: set[str] = set()

    def add(self, op: Operation) -> None:
        self.ops.append(op)
        if isinstance(op, Put):
            self._items[op.item.id] = op
        elif isinstance(op, Delete):
            self._items[op.item_id] = None
            self._ever_deleted.add(op.item_id)
            for key in list(self._edges):
                if op.item_id in (key[0], key[1]):
                    self._edges[key] = None
        elif isinstance(op, Relate):
            self._edges[op.relationship.key] = op.relationship
        elif isinstance(op, Unrelate):
            self._edges[(op.source_id, op.target_id, op.rel_type)] = None

    def __len__(self) -> int:
        return len(self.ops)

    def __bool__(self) -> bool:
        return bool(self.ops)

    def touches(self, item_id: str) -> bool:
        return item_id in self._items

    def lookup(self, item_id: str) -> object:
        """The buffered state of an id: a MemoryItem, None if deleted, or _ABSENT if untouched."""
        put = self._items.get(item_id, _ABSENT)
        if put is _ABSENT or put is None:
            return put
        return put.item  # type: ignore[union-attr]

    def buffered_put(self, item_id: str) -> Put | None:
        return self._items.get(item_id)  # type: ignore[return-value]

    def live_puts(self) -> Iterable[Put]:
        return (p for p in self._items.values() if p is not None)

    def edge_cut_ids(self) -> set[str]:
        """Ids deleted at some point in the transaction: their stored edges are gone."""
        return self._ever_deleted

    def overlay_search(self, stored: Iterable[MemoryItem], query: MemoryQuery) -> list[MemoryItem]:
        """Merge what the store returned (without limit) with the buffered writes."""
        merged = [i for i in stored if i.id not in self._items]
        merged.extend(p.item for p in self.live_puts())
        return query.select(merged)

    def edge_state(self, key: tuple[str, str, str]) -> object:
        return self._edges.get(key, _ABSENT)

    def edges(self) -> dict[tuple[str, str, str], Relationship | None]:
        return self._edges


ABSENT = _ABSENT
