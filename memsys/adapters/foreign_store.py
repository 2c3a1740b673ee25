"""A store written by someone else, made a transaction participant.

MemoryManager accepts any object with the MemoryStore methods. Adapters built
on BaseMemoryStore join transactions directly; any other one is wrapped here:
writes in a transaction are buffered by the wrapper, and applied to the outside
store one call at a time with per-item before-images, restored if a call fails.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from memsys.adapters._base import BaseMemoryStore
from memsys.domain.errors import InvalidInputError, UnsupportedCapabilityError
from memsys.domain.model import MemoryItem
from memsys.domain.operations import Delete, Operation, Put

_REQUIRED = ("store", "retrieve", "search", "delete", "close")


class ForeignStore(BaseMemoryStore):
    backend = "foreign"
    atomic_apply = False
    #: The wrapped store owns its path (and any lock on it); the wrapper opens no file.
    exclusive_path = False

    def __init__(self, inner: Any, *, name: str | None = None) -> None:
        missing = [m for m in _REQUIRED if not callable(getattr(inner, m, None))]
        if missing:
            raise InvalidInputError(f"{type(inner).__name__} is not a MemoryStore: it lacks {', '.join(missing)}")
        super().__init__(getattr(inner, "path", None), name=name or type(inner).__name__)
        self.inner = inner
        self.capabilities = frozenset(getattr(inner, "capabilities", ())) | BaseMemoryStore.capabilities

    def _get(self, item_id: str) -> MemoryItem | None:
        return self.inner.retrieve(item_id)

    def _scan(self) -> Iterable[MemoryItem]:
        return self.inner.search({})

    def _apply(self, ops: Sequence[Operation], durable: bool) -> None:
        for op in ops:
            if isinstance(op, Put):
                self.inner.store(op.item)
            elif isinstance(op, Delete):
                self.inner.delete(op.item_id)
            else:
                raise UnsupportedCapabilityError(f"{self.name} does not store relationships")

    def _close(self) -> None:
        self.inner.close()

    def __repr__(self) -> str:
        return f"ForeignStore({self.inner!r})"


def as_participant(name: str, adapter: Any) -> BaseMemoryStore:
    """The adapter itself if it can take part in transactions, else a ForeignStore around it."""
    return adapter if isinstance(adapter, BaseMemoryStore) else ForeignStore(adapter, name=name)
