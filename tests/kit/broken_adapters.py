"""Deliberately broken adapters: each breaks one promise the kit must catch."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import zlib

from memsys.domain.errors import DiskFullError, StoreError
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
        self._lock = threading.Lock()
        self._closed = False
        self._items = {}
        self._lock_fd = None
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        with open(self.path, "rb") as f:
            for line in f:
                self._replay(json.loads(line.partition(b" ")[2]))
        self._size = os.path.getsize(self.path)

    def _check_open(self) -> None:
        os.fstat(self._fd)  # raises a bare OSError once the file is closed


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


class AliasingStore(JsonlStore):
    """Shares its state with callers: it keeps the metadata dict of the item it was given, and the
    items it returns carry that same dict, so a caller's mutation changes what it holds."""

    def __init__(self, path: str) -> None:
        self._shared: dict[str, dict] = {}
        super().__init__(path)

    def store(self, item: MemoryItem) -> str:
        item_id = super().store(item)
        # Keep the caller's own dict where it is one (the bug); else a plain copy it then hands out.
        self._shared[item_id] = item.metadata if type(item.metadata) is dict else json.loads(json.dumps(item.metadata))
        return item_id

    def _handed_out(self, item: MemoryItem | None) -> MemoryItem | None:
        if item is not None:
            shared = self._shared.setdefault(item.id, json.loads(json.dumps(item.metadata)))
            object.__setattr__(item, "metadata", shared)  # the store's own dict leaves the store
        return item

    def retrieve(self, item_id: str) -> MemoryItem | None:
        return self._handed_out(super().retrieve(item_id))

    def search(self, query: object) -> list[MemoryItem]:
        return [self._handed_out(i) for i in super().search(query)]


class UnlockedRewritingStore(JsonlStore):
    """No lock on its path, and every write rewrites the journal from what this opener holds in
    memory: a second opener's writes are silently overwritten (DevSynth's TinyDB did this)."""

    def _acquire_lock(self) -> int | None:
        return None

    def _append(self, record: dict) -> None:
        state = dict(self._items)
        if record["op"] == "put":
            state[record["item"]["id"]] = json.dumps(record["item"])
        else:
            state.pop(record["id"], None)
        lines = []
        for text in state.values():
            payload = json.dumps({"op": "put", "item": json.loads(text)}).encode()
            lines.append(b"%08x " % zlib.crc32(payload) + payload + b"\n")
        data = b"".join(lines)
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, data, 0)
        os.fsync(self._fd)
        self._size = len(data)


class DropsDamagedRecordsStore(JsonlStore):
    """Skips a journal line that fails its checksum instead of reporting the damage."""

    def _damaged_line(self, offset: int) -> None:
        pass


class FailsUnderSustainedUpdatesStore(JsonlStore):
    """Each update of an existing id takes a slot of a fixed pool that is freed only by reopening,
    as Kuzu's buffer pool filled under updates: after ``POOL`` of them every write fails."""

    POOL = 300

    def __init__(self, path: str) -> None:
        self._used = 0
        super().__init__(path)

    def store(self, item: MemoryItem) -> str:
        if isinstance(item, MemoryItem) and item.id in self._items:
            if self._used >= self.POOL:
                raise StoreError(f"{self.path}: buffer pool is full")
            self._used += 1
        return super().store(item)


class IgnoresFullDiskStore(JsonlStore):
    """Acknowledges a write the full disk refused: it is served from memory, and gone after a reopen."""

    def _append(self, record: dict) -> None:
        try:
            super()._append(record)
        except DiskFullError:
            pass  # the bug: the caller is told the write succeeded


class CrashesOnDamageStore(JsonlStore):
    """Dies (SIGSEGV) on a damaged record, as a native engine reading a damaged page may."""

    def _damaged_line(self, offset: int) -> None:
        os.kill(os.getpid(), signal.SIGSEGV)


class HangsOnDamageStore(JsonlStore):
    """Spins forever on a damaged record."""

    def _damaged_line(self, offset: int) -> None:
        while True:
            time.sleep(1)
