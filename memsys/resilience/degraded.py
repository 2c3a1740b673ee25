"""The reconciliation queue of degraded mode: writes that missed a store, kept on disk until applied.

Each entry is one item (with the version it was committed with) and the store
it still has to reach, appended as a JSON line and fsynced before the write is
acknowledged. Reconciliation applies, per store and id, only the newest entry,
and only if the store does not already hold a newer version: a stale queued
write never overwrites newer data.
"""

from __future__ import annotations

import dataclasses
import json
import os
import threading
from typing import Any

from memsys.durable import atomic_write
from memsys.domain.errors import CorruptStoreError
from memsys.domain.model import MemoryItem, decode_item


@dataclasses.dataclass(frozen=True)
class QueuedWrite:
    seq: int
    store: str
    item: MemoryItem


class ReconciliationQueue:
    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = None if path is None else os.fspath(path)
        self._lock = threading.Lock()
        self._entries: list[QueuedWrite] = []
        self._seq = 0
        if self.path is not None and os.path.exists(self.path):
            with open(self.path, encoding="utf-8") as f:
                lines = f.read().splitlines()
            for n, line in enumerate(lines):
                try:
                    record = json.loads(line)
                except ValueError as exc:
                    if n == len(lines) - 1:
                        break  # torn by a crash: never acknowledged
                    raise CorruptStoreError(f"{self.path}: line {n + 1} is unreadable", path=self.path) from exc
                self._entries.append(QueuedWrite(record["seq"], record["store"], decode_item(record["item"])))
                self._seq = max(self._seq, record["seq"])

    def add(self, store: str, item: MemoryItem) -> None:
        with self._lock:
            self._seq += 1
            entry = QueuedWrite(self._seq, store, item)
            if self.path is not None:
                with open(self.path, "a", encoding="utf-8") as f:
                    f.write(json.dumps({"seq": entry.seq, "store": store, "item": item.to_dict()}) + "\n")
                    f.flush()
                    os.fsync(f.fileno())
            self._entries.append(entry)

    def latest(self) -> list[QueuedWrite]:
        """The newest queued write per (store, id), oldest first."""
        with self._lock:
            newest: dict[tuple[str, str], QueuedWrite] = {}
            for entry in self._entries:
                newest[(entry.store, entry.item.id)] = entry
            return sorted(newest.values(), key=lambda e: e.seq)

    def done(self, entries: list[QueuedWrite]) -> None:
        """Drop ``entries`` and every older entry for the same (store, id)."""
        with self._lock:
            cutoff = {(e.store, e.item.id): e.seq for e in entries}
            self._entries = [e for e in self._entries if e.seq > cutoff.get((e.store, e.item.id), -1)]
            if self.path is not None:
                body = "".join(json.dumps({"seq": e.seq, "store": e.store, "item": e.item.to_dict()}) + "\n"
                               for e in self._entries)
                atomic_write(self.path, body.encode())

    def __len__(self) -> int:
        return len(self._entries)

    def stores(self) -> set[str]:
        return {e.store for e in self._entries}

    def describe(self) -> dict[str, Any]:
        return {"pending": len(self), "stores": sorted(self.stores())}
