"""A small third-party-style adapter written against the MemoryStore protocol only.

It does not use memsys' adapter base class: it shows what an outside adapter
must do to pass the kit, and the broken variants in broken_adapters.py are
built from it by changing one behaviour each.
"""

from __future__ import annotations

import json
import os
import threading

from memsys.domain.errors import InvalidMemoryItemError, StoreClosedError, StoreError
from memsys.domain.model import MemoryItem, check_id, check_json
from memsys.domain.query import MemoryQuery
from memsys.ports import Capability


class JsonlStore:
    """Items in memory, every write appended to a JSON-lines journal and fsynced."""

    capabilities = frozenset({Capability.PERSISTENCE})

    def __init__(self, path: str) -> None:
        self.path = os.fspath(path)
        self._lock = threading.Lock()
        self._closed = False
        self._items: dict[str, MemoryItem] = {}
        try:
            if os.path.exists(self.path):
                with open(self.path, encoding="utf-8") as f:
                    for line in f:
                        self._replay(json.loads(line))
            self._file = open(self.path, "a", encoding="utf-8")
        except (OSError, ValueError, KeyError) as exc:
            raise StoreError(f"cannot open journal {self.path}: {exc}") from exc

    def _replay(self, record: dict) -> None:
        if record["op"] == "put":
            item = MemoryItem.from_dict(record["item"])
            self._items[item.id] = item
        else:
            self._items.pop(record["id"], None)

    def _append(self, record: dict) -> None:
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosedError(f"{self.path} is closed")

    def store(self, item: MemoryItem) -> str:
        if not isinstance(item, MemoryItem):
            raise InvalidMemoryItemError(f"store() takes a MemoryItem, got {type(item).__name__}")
        check_json(item.metadata, "metadata")
        with self._lock:
            self._check_open()
            self._append({"op": "put", "item": item.to_dict()})
            self._items[item.id] = item
        return item.id

    def retrieve(self, item_id: str) -> MemoryItem | None:
        check_id(item_id)
        with self._lock:
            self._check_open()
            return self._items.get(item_id)

    def search(self, query: object) -> list[MemoryItem]:
        parsed = MemoryQuery.parse(query)
        with self._lock:
            self._check_open()
            return parsed.select(self._items.values())

    def delete(self, item_id: str) -> bool:
        check_id(item_id)
        with self._lock:
            self._check_open()
            if item_id not in self._items:
                return False
            self._append({"op": "delete", "id": item_id})
            del self._items[item_id]
            return True

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._file.close()
