"""Deliberately broken adapters: each breaks one promise the kit must catch."""

from __future__ import annotations

import json
import os

from memsys.domain.model import MemoryItem
from memsys.domain.query import MemoryQuery
from tests.kit.jsonl_store import JsonlStore


class DropsMetadataStore(JsonlStore):
    """Stores every item without its metadata."""

    def store(self, item: MemoryItem) -> str:
        return super().store(item.replace(metadata={}) if isinstance(item, MemoryItem) else item)


class ResurrectingStore(JsonlStore):
    """Forgets to journal deletes, so deleted items come back after reopen."""

    def _append(self, record: dict) -> None:
        if record["op"] != "delete":
            super()._append(record)


class LosesLastWritesStore(JsonlStore):
    """Writes the journal in batches of ten and drops the unwritten tail on close."""

    def _append(self, record: dict) -> None:
        self._pending = getattr(self, "_pending", []) + [record]
        if len(self._pending) >= 10:
            for r in self._pending:
                super()._append(r)
            self._pending = []


class LeaksDriverErrorsStore(JsonlStore):
    """Lets json and file errors escape untyped (no translation in open, no closed check)."""

    def __init__(self, path: str) -> None:
        self.path = os.fspath(path)
        import threading

        self._lock = threading.Lock()
        self._closed = False
        self._items = {}
        if os.path.exists(self.path):
            with open(self.path, encoding="utf-8") as f:
                for line in f:
                    self._replay(json.loads(line))
        self._file = open(self.path, "a", encoding="utf-8")

    def _check_open(self) -> None:
        self._file.fileno()  # raises a bare ValueError once the file is closed


class DuplicatingStore(JsonlStore):
    """Appends on every store, so an update leaves two copies."""

    def __init__(self, path: str) -> None:
        self._copies: list[MemoryItem] = []
        super().__init__(path)

    def _replay(self, record: dict) -> None:
        super()._replay(record)
        if record["op"] == "put":
            self._copies.append(MemoryItem.from_dict(record["item"]))

    def store(self, item: MemoryItem) -> str:
        item_id = super().store(item)
        self._copies.append(item)
        return item_id

    def search(self, query: object) -> list[MemoryItem]:
        parsed = MemoryQuery.parse(query)
        live = [c for c in self._copies if c.id in self._items]
        return sorted((c for c in live if parsed.matches(c)), key=lambda i: (i.created_at, i.id))
