"""What every feature's steps share: the seven stores, a per-scenario world, and its cleanup.

A scenario's objects (stores, managers, fault plans) live in ``world``; whatever a scenario
opened is closed at its end, quietly, so one failing scenario never leaves a path locked for
the next one.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import pytest

from memsys import MemoryItem, MemoryManager, MemoryType
from memsys.testing.crash import open_store

#: Every embedded store memsys ships, as the outlines name them.
ADAPTERS = ("tinydb", "networkx", "faiss", "chroma", "kuzu", "lmdb", "duckdb")
VECTOR_STORES = ("faiss", "chroma")


def partner(store: str) -> str:
    """The second store of a two-store scenario: TinyDB, or LMDB when the first is TinyDB."""
    return "lmdb" if store == "tinydb" else "tinydb"


def note(item_id: str, content: Any = "remember this", **fields: Any) -> MemoryItem:
    return MemoryItem(id=item_id, content=content, memory_type=MemoryType.KNOWLEDGE, **fields)


class World(dict):
    """One scenario's state; ``keep`` registers what must be closed when the scenario ends."""

    def __init__(self, root: Any) -> None:
        super().__init__(root=root)
        self._open: list[Any] = []

    def keep(self, thing: Any) -> Any:
        self._open.append(thing)
        return thing

    def open_store(self, kind: str, *, managed: bool = True, folder: Any = None) -> Any:
        """``kind``'s store in the scenario's folder (or ``folder``), as the crash campaign sets it up."""
        return self.keep(open_store(kind, str(folder or self["root"]), managed=managed))

    def manager(self, stores: dict[str, Any], **options: Any) -> MemoryManager:
        options.setdefault("transaction_log", self["root"] / "txlog")
        manager = MemoryManager(stores, **options)
        self["manager"] = manager
        return self.keep(manager)

    def close_all(self) -> None:
        previous = logging.root.manager.disable
        logging.disable(logging.CRITICAL)  # closing what a failed or crashed scenario left is not news
        try:
            for thing in reversed(self._open):
                with contextlib.suppress(Exception):
                    thing.close()
        finally:
            logging.disable(previous)
        self._open.clear()


@pytest.fixture
def world(tmp_path):
    state = World(tmp_path)
    yield state
    state.close_all()


def present_on(manager: MemoryManager, item_id: str) -> set[str]:
    """The stores of ``manager`` that hold ``item_id`` now."""
    return {name for name, adapter in manager.adapters.items() if adapter.retrieve(item_id) is not None}
