"""Deliberately broken stores for the chaos run's own tests: each breaks one promise, and
``memsys chaos run`` must fail naming the experiment. Given to the run by spec
(``tests.chaos.broken_stores:Class?path=...``) in a config, as a third-party adapter would be."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from memsys.adapters.lmdb_store import LMDBMemoryAdapter
from memsys.domain.model import MemoryItem
from memsys.domain.operations import Delete, Operation, Put


class AcknowledgesBeforeDurable(LMDBMemoryAdapter):
    """Acknowledges every write but keeps new items in memory only; flush() claims they are on disk."""

    def __init__(self, *args, **kwargs) -> None:
        self._volatile: dict[str, MemoryItem] = {}
        super().__init__(*args, **kwargs)

    def _apply(self, ops: Sequence[Operation], durable: bool) -> None:
        kept = []
        for op in ops:
            if isinstance(op, Put):
                self._volatile[op.item.id] = op.item
            else:
                if isinstance(op, Delete):
                    self._volatile.pop(op.item_id, None)
                kept.append(op)
        super()._apply(kept, durable)

    def _get(self, item_id: str) -> MemoryItem | None:
        return self._volatile.get(item_id) or super()._get(item_id)

    def _get_many(self, item_ids: Sequence[str]) -> dict[str, MemoryItem]:
        found = super()._get_many(item_ids)
        found.update({i: self._volatile[i] for i in item_ids if i in self._volatile})
        return found

    def _scan(self) -> Iterable[MemoryItem]:
        return [*super()._scan(), *self._volatile.values()]


class ResurrectsDeletes(LMDBMemoryAdapter):
    """Deletes only in memory: the items are gone until the store is opened again."""

    def __init__(self, *args, **kwargs) -> None:
        self._tombstones: set[str] = set()
        super().__init__(*args, **kwargs)

    def _apply(self, ops: Sequence[Operation], durable: bool) -> None:
        kept = []
        for op in ops:
            if isinstance(op, Delete):
                self._tombstones.add(op.item_id)
            else:
                if isinstance(op, Put):
                    self._tombstones.discard(op.item.id)
                kept.append(op)
        super()._apply(kept, durable)

    def _get(self, item_id: str) -> MemoryItem | None:
        return None if item_id in self._tombstones else super()._get(item_id)

    def _get_many(self, item_ids: Sequence[str]) -> dict[str, MemoryItem]:
        return {k: v for k, v in super()._get_many(item_ids).items() if k not in self._tombstones}

    def _scan(self) -> Iterable[MemoryItem]:
        return [i for i in super()._scan() if i.id not in self._tombstones]


class InterruptedWhileOpening(LMDBMemoryAdapter):
    """Stands for Ctrl-C arriving in the middle of a run."""

    def __init__(self, *args, **kwargs) -> None:
        raise KeyboardInterrupt
