"""A complete memsys adapter in about a hundred lines: items in memory, every write in a journal.

This is the worked example of docs/adapters.md. It uses only the public helpers
of ``memsys.adapters.base`` and passes every section of

    memsys verify-adapter examples.jsonfile_store:JsonFileStore

Step by step (the guide explains each):

1. Subclass ``BaseMemoryStore``; name the backend and declare capabilities. The
   base class already gives transactions (buffered per thread) and snapshots;
   we add PERSISTENCE because reopening the path sees the data.
2. ``__init__(path, ...)``: validate arguments before touching the disk, then open
   inside ``self._opening()`` (an OS lock on the path: a second opener gets
   StoreLockedError) and under ``self._call`` (driver errors become memsys errors).
3. Durability: a ``Journal`` (a checksummed snapshot plus an append-only log of
   operation batches). ``_apply`` appends one record per batch and fsyncs it
   BEFORE changing memory, so an acknowledged write survives a SIGKILL or a power
   loss, and a failed append changes nothing. A damaged record is
   CorruptStoreError naming the file and offset; only a torn tail is dropped.
4. The primitives: ``_get``, ``_scan``, ``_apply`` (idempotent: a Put replaces by
   id, a Delete of a missing id is a no-op, so a retried or redone batch
   converges), ``_flush`` and ``_close``. Search uses the base's
   ``query.select`` over ``_scan`` (the reference semantics).
5. ``_translate``: the one place a driver exception becomes a memsys error.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar

from memsys.adapters.base import (
    BaseMemoryStore,
    Capability,
    CorruptStoreError,
    Delete,
    InvalidInputError,
    Journal,
    MemoryItem,
    MemsysError,
    Operation,
    Put,
    StoreError,
    UnsupportedCapabilityError,
    decode_item,
    decode_op,
    encode_op,
    os_error,
)

SNAPSHOT = "items.snapshot"
FORMAT = "jsonfile-store-1"


class JsonFileStore(BaseMemoryStore):
    """Memory items in a folder: a JSON snapshot and a journal of batches."""

    backend = "jsonfile"
    capabilities: ClassVar[frozenset[Capability]] = BaseMemoryStore.capabilities | {Capability.PERSISTENCE}
    # One journal append per batch is all-or-nothing (a torn record is dropped at open).
    atomic_apply = True

    def __init__(self, path: str | os.PathLike[str], *, sync: bool = True, compact_bytes: int = 1 << 20,
                 name: str | None = None) -> None:
        if not isinstance(sync, bool):
            raise InvalidInputError(f"sync must be a bool, got {sync!r}")
        if isinstance(compact_bytes, bool) or not isinstance(compact_bytes, int) or compact_bytes < 0:
            raise InvalidInputError(f"compact_bytes must be a non-negative int, got {compact_bytes!r}")
        super().__init__(path, name=name)
        if self.path is None:
            raise InvalidInputError("JsonFileStore needs path= (the folder it keeps its files in)")
        self.sync = sync
        self._items: dict[str, MemoryItem] = {}  # MemoryItems are immutable: safe to hand out
        self._journal = Journal(self.path, SNAPSHOT, sync=sync, compact_bytes=compact_bytes, store=self.name)
        with self._opening():
            self._call("open", self._open)

    # --- opening: the snapshot, then every batch logged after it

    def _open(self) -> None:
        if os.path.exists(self.path) and not os.path.isdir(self.path):  # type: ignore[arg-type]
            raise InvalidInputError(f"{self.name}: {self.path} is a file; JsonFileStore keeps a folder")
        snapshot, batches = self._journal.open()
        if snapshot is not None:
            header, body = snapshot
            if header.get("format") != FORMAT:
                raise CorruptStoreError(f"{self._journal.snapshot_path}: unknown format {header.get('format')!r}",
                                        path=self._journal.snapshot_path)
            for record in json.loads(body):
                item = decode_item(record)
                self._items[item.id] = item
        for batch in batches:
            self._apply_in_memory([decode_op(record) for record in batch])

    def _translate(self, exc: Exception, operation: str) -> MemsysError:
        if isinstance(exc, OSError):  # ENOSPC -> DiskFullError, EROFS -> ReadOnlyStoreError, ...
            return os_error(exc, f"{self.name}: {operation} on {self.path}", store=self.name)
        if isinstance(exc, (ValueError, KeyError, TypeError)):
            return CorruptStoreError(f"{self.name}: {self.path} holds an unreadable record: {exc}", path=self.path)
        return StoreError(f"{self.name}: {operation} failed: {type(exc).__name__}: {exc}", store=self.name)

    # --- the primitives the base class builds everything on

    def _get(self, item_id: str) -> MemoryItem | None:
        return self._items.get(item_id)

    def _scan(self) -> Iterable[MemoryItem]:
        return list(self._items.values())

    def _count(self) -> int:
        return len(self._items)

    def _apply(self, ops: Sequence[Operation], durable: bool) -> None:
        if not ops:
            return
        for op in ops:
            if not isinstance(op, (Put, Delete)):
                raise UnsupportedCapabilityError(f"{self.name} stores no relationships")
        # Durable first, memory second: a failed append leaves both as they were.
        self._journal.append([encode_op(op) for op in ops], durable=durable or self.sync)
        self._apply_in_memory(ops)
        self._journal.maybe_compact(self._dump)

    def _apply_in_memory(self, ops: Sequence[Operation]) -> None:
        for op in ops:
            if isinstance(op, Put):
                self._items[op.item.id] = op.item
            elif isinstance(op, Delete):
                self._items.pop(op.item_id, None)

    def _dump(self) -> tuple[dict[str, Any], bytes]:
        body = json.dumps([item.to_dict() for item in self._items.values()], ensure_ascii=False).encode()
        return {"format": FORMAT}, body

    def _flush(self) -> None:
        self._journal.flush()

    def _close(self) -> None:
        self._journal.close()
