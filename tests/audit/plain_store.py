"""A third-party store built only on the public protocol (no BaseMemoryStore): one JSON file
rewritten atomically per write, a PathLock against a second opener. The manager wraps it
(ForeignStore) to take part in cross-store transactions."""

from __future__ import annotations

import json
import os
import threading
from typing import Any

from memsys.adapters.base import (
    Capability,
    CorruptStoreError,
    PathLock,
    StoreClosedError,
    atomic_write,
    check_id,
    decode_item,
    evaluate_query,
    os_error,
    validate_item,
)


class PlainJsonStore:
    capabilities = frozenset({Capability.PERSISTENCE})

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        os.makedirs(self.path, exist_ok=True)
        self._lock_file = PathLock.acquire(self.path, owner="PlainJsonStore")
        self._file = os.path.join(self.path, "items.json")
        self._lock = threading.Lock()
        self._closed = False
        self._items: dict[str, Any] = {}
        try:
            if os.path.exists(self._file):
                with open(self._file, "rb") as f:
                    self._items = {d["id"]: decode_item(d) for d in json.load(f)}
        except (ValueError, KeyError, TypeError) as exc:
            self._lock_file.release()
            raise CorruptStoreError(f"{self._file}: {exc}", path=self._file) from exc
        except OSError as exc:
            self._lock_file.release()
            raise os_error(exc, "open", path=self._file) from exc

    def _save(self, items: dict[str, Any]) -> None:
        body = json.dumps([i.to_dict() for i in items.values()], ensure_ascii=False).encode()
        try:
            atomic_write(self._file, body)  # fsynced file and folder: durable when store() returns
        except OSError as exc:
            raise os_error(exc, "write", path=self._file) from exc

    def _open(self) -> None:
        if self._closed:
            raise StoreClosedError(f"PlainJsonStore at {self.path} is closed")

    def store(self, item: Any) -> str:
        with self._lock:
            self._open()
            validate_item(item)
            items = dict(self._items)
            items[item.id] = item
            self._save(items)
            self._items = items
            return item.id

    def retrieve(self, item_id: str) -> Any:
        with self._lock:
            self._open()
            check_id(item_id)
            return self._items.get(item_id)

    def search(self, query: Any = None) -> list[Any]:
        with self._lock:
            self._open()
            return evaluate_query(query, list(self._items.values()))

    def delete(self, item_id: str) -> bool:
        with self._lock:
            self._open()
            check_id(item_id)
            if item_id not in self._items:
                return False
            items = dict(self._items)
            del items[item_id]
            self._save(items)
            self._items = items
            return True

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._lock_file.release()
