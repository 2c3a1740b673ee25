"""A small third-party-style adapter written against the MemoryStore protocol only.

It does not use memsys' adapter base class: it shows what an outside adapter
must do to pass the kit, and the broken variants in broken_adapters.py are
built from it by changing one behaviour each. What it takes:

* every write appended to a journal and fsynced; each line carries the CRC-32
  of its JSON, so a damaged line is CorruptStoreError (naming the file and
  byte) and only a torn last line (no newline: a crash mid-append) is dropped;
* a failed append (a full disk) is cut off again and raised as DiskFullError,
  so the file holds only acknowledged writes;
* an OS lock on the path: a second opener gets StoreLockedError;
* items kept and handed out as private copies, so callers never share the
  store's state.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import threading
import zlib

from memsys.domain.errors import (
    CorruptStoreError,
    DiskFullError,
    InvalidMemoryItemError,
    StoreClosedError,
    StoreError,
    StoreLockedError,
)
from memsys.domain.model import MemoryItem, check_id, check_json
from memsys.domain.query import MemoryQuery
from memsys.ports import Capability


class JsonlStore:
    """Items in memory (as their JSON text), every write appended to a checksummed journal."""

    capabilities = frozenset({Capability.PERSISTENCE})

    def __init__(self, path: str) -> None:
        self.path = os.fspath(path)
        self._lock = threading.Lock()
        self._closed = False
        self._items: dict[str, str] = {}  # id -> the item's JSON: every read builds a fresh item
        self._lock_fd = self._acquire_lock()
        try:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                self._size = self._load()
                os.ftruncate(self._fd, self._size)  # cut a torn last line off before appending
            except BaseException:
                os.close(self._fd)
                raise
        except OSError as exc:
            self._release_lock()
            raise StoreError(f"cannot open journal {self.path}: {exc}") from exc
        except BaseException:
            self._release_lock()
            raise

    # --- the path lock

    def _acquire_lock(self) -> int | None:
        fd = os.open(self.path + ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            os.close(fd)
            raise StoreLockedError(f"{self.path} is open elsewhere", path=self.path) from exc
        return fd

    def _release_lock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # --- the journal

    def _load(self) -> int:
        """Replay the journal; returns the size of its intact part."""
        with open(self.path, "rb") as f:
            data = f.read()
        offset = 0
        while offset < len(data):
            end = data.find(b"\n", offset)
            if end < 0:
                break  # a torn last line: never acknowledged
            self._replay_line(data[offset:end], offset)
            offset = end + 1
        return offset

    def _replay_line(self, line: bytes, offset: int) -> None:
        crc, _, payload = line.partition(b" ")
        try:
            intact = int(crc, 16) == zlib.crc32(payload)
            record = json.loads(payload) if intact else None
        except ValueError:
            intact = False
        if not intact:
            self._damaged_line(offset)
            return
        try:
            self._replay(record)
        except (KeyError, TypeError, ValueError) as exc:
            raise CorruptStoreError(f"{self.path}: unreadable record at byte {offset}: {exc}", path=self.path) from exc

    def _damaged_line(self, offset: int) -> None:
        raise CorruptStoreError(f"{self.path}: the record at byte {offset} fails its checksum", path=self.path)

    def _replay(self, record: dict) -> None:
        if record["op"] == "put":
            item = MemoryItem.from_dict(record["item"])
            self._items[item.id] = json.dumps(record["item"])
        else:
            self._items.pop(record["id"], None)

    def _append(self, record: dict) -> None:
        payload = json.dumps(record).encode()
        line = b"%08x " % zlib.crc32(payload) + payload + b"\n"
        try:
            written = 0
            while written < len(line):
                written += os.pwrite(self._fd, line[written:], self._size + written)
            os.fsync(self._fd)
        except OSError as exc:
            try:
                os.ftruncate(self._fd, self._size)  # the file keeps only acknowledged writes
            except OSError:
                pass
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise DiskFullError(f"{self.path}: the disk is full", path=self.path) from exc
            raise StoreError(f"{self.path}: append failed: {exc}") from exc
        self._size += len(line)

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosedError(f"{self.path} is closed")

    # --- the MemoryStore protocol

    def store(self, item: MemoryItem) -> str:
        if not isinstance(item, MemoryItem):
            raise InvalidMemoryItemError(f"store() takes a MemoryItem, got {type(item).__name__}")
        check_json(item.metadata, "metadata")
        data = json.loads(json.dumps(item.to_dict()))
        with self._lock:
            self._check_open()
            self._append({"op": "put", "item": data})
            self._items[item.id] = json.dumps(data)
        return item.id

    def retrieve(self, item_id: str) -> MemoryItem | None:
        check_id(item_id)
        with self._lock:
            self._check_open()
            text = self._items.get(item_id)
        return None if text is None else MemoryItem.from_dict(json.loads(text))

    def search(self, query: object) -> list[MemoryItem]:
        parsed = MemoryQuery.parse(query)
        with self._lock:
            self._check_open()
            texts = list(self._items.values())
        return parsed.select(MemoryItem.from_dict(json.loads(t)) for t in texts)

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
                os.close(self._fd)
                self._release_lock()
