"""TinyDB: one JSON file, rewritten atomically on every write.

Records are ``SerializedMemoryItem`` dicts (memory_type stored as the enum
value; legacy records holding the enum name load), keyed by item id in the
``memory_items`` table. TinyDB's own JSONStorage rewrites the file in place,
so a crash can tear it; this adapter's storage writes a temporary file, fsyncs
it and renames it over the old one, so the file on disk is always a complete
state. A batch (or a transaction's commit) is one such rewrite. A file that is
not valid JSON raises CorruptStoreError naming it, and is never written over.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, ClassVar

from memsys.adapters._base import BaseMemoryStore, import_backend
from memsys.durable import atomic_write
from memsys.domain.errors import CorruptStoreError, InvalidMemoryItemError, MemsysError, StoreError
from memsys.domain.model import MemoryItem, decode_item
from memsys.domain.operations import Delete, Operation, Put
from memsys.ports import Capability

TABLE = "memory_items"


class _AtomicJSONStorage:
    """A TinyDB storage that keeps the data in memory and replaces the file atomically."""

    def __init__(self, path: str, sync: bool = True) -> None:
        self.path = path
        self.sync = sync
        self._data: dict[str, Any] | None = None
        self._deferred = 0
        self._dirty = False

    def read(self) -> dict[str, Any] | None:
        if self._data is None:
            if not os.path.exists(self.path) or os.path.getsize(self.path) == 0:
                return None
            try:
                with open(self.path, encoding="utf-8") as f:
                    data = json.load(f)
            except (ValueError, UnicodeDecodeError) as exc:
                raise CorruptStoreError(f"{self.path} is not a valid TinyDB JSON file: {exc}", path=self.path) from exc
            if not isinstance(data, dict) or not all(isinstance(t, dict) for t in data.values()):
                raise CorruptStoreError(f"{self.path} does not hold TinyDB tables", path=self.path)
            self._data = data
        return self._data

    def write(self, data: dict[str, Any]) -> None:
        self._data = data
        if self._deferred:
            self._dirty = True
        else:
            self._persist()

    def _persist(self) -> None:
        try:
            atomic_write(self.path, json.dumps(self._data, ensure_ascii=False).encode("utf-8"), sync=self.sync)
        except BaseException:
            self._data = None  # the file still holds the last good state: read it again
            raise

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Hold TinyDB's writes in memory and persist them as one atomic rewrite."""
        self._deferred += 1
        try:
            yield
        except BaseException:
            self._data = None
            self._dirty = False
            raise
        finally:
            self._deferred -= 1
        if not self._deferred and self._dirty:
            self._dirty = False
            self._persist()

    def close(self) -> None:
        pass


class TinyDBMemoryAdapter(BaseMemoryStore):
    backend = "tinydb"
    capabilities: ClassVar[frozenset[Capability]] = BaseMemoryStore.capabilities | {Capability.PERSISTENCE}

    def __init__(self, path: str | os.PathLike[str], *, sync: bool = True, name: str | None = None) -> None:
        super().__init__(path, name=name)
        tinydb = import_backend("tinydb", "tinydb")
        self.sync = sync

        class _Table(tinydb.table.Table):
            document_id_class = str  # item ids are the document ids

        class _TinyDB(tinydb.TinyDB):
            table_class = _Table

        def open_db() -> None:
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)  # type: ignore[arg-type]
            self._storage: _AtomicJSONStorage | None = None

            def storage_factory(*_: Any, **__: Any) -> _AtomicJSONStorage:
                self._storage = _AtomicJSONStorage(self.path, sync)  # type: ignore[arg-type]
                return self._storage

            self._db = _TinyDB(storage=storage_factory)
            self._table = self._db.table(TABLE, cache_size=0)
            self._documents = tinydb.table.Document
            self._storage.read()  # type: ignore[union-attr]  # fail now, not at the first call, on a corrupt file

        self._call("open", open_db)

    def _translate(self, exc: Exception, operation: str) -> MemsysError:
        if isinstance(exc, InvalidMemoryItemError):
            return CorruptStoreError(f"{self.name}: {self.path} holds an unreadable record: {exc}", path=self.path)
        return StoreError(f"{self.name}: {operation} on {self.path} failed: {type(exc).__name__}: {exc}",
                          store=self.name)

    def _decode(self, item_id: str, record: Any) -> MemoryItem:
        try:
            return decode_item(record)
        except MemsysError as exc:
            raise CorruptStoreError(f"{self.name}: record {item_id!r} in {self.path} is unreadable: {exc}",
                                    path=self.path) from exc

    def _records(self) -> dict[str, Any]:
        return (self._storage.read() or {}).get(TABLE, {})  # type: ignore[union-attr]  # raw, no copies

    def _get(self, item_id: str) -> MemoryItem | None:
        record = self._records().get(item_id)
        return None if record is None else self._decode(item_id, record)

    def _scan(self) -> Iterable[MemoryItem]:
        return [self._decode(k, v) for k, v in self._records().items()]

    def _count(self) -> int:
        return len(self._records())

    def _apply(self, ops: Sequence[Operation], durable: bool) -> None:
        last: dict[str, Operation] = {}
        for op in ops:  # whole-item overwrites and removals: only the last op per id counts
            if isinstance(op, (Put, Delete)):
                last[op.item_id] = op
        existing = self._records()
        replaced = [i for i in last if i in existing]
        documents = [self._documents(op.item.to_dict(), doc_id=op.item.id)
                     for op in last.values() if isinstance(op, Put)]
        storage = self._storage
        storage.sync = self.sync or durable  # type: ignore[union-attr]
        with storage.batch():  # type: ignore[union-attr]
            if replaced:
                self._table.remove(doc_ids=replaced)
            if documents:
                self._table.insert_multiple(documents)

    def _flush(self) -> None:
        if os.path.exists(self.path):  # type: ignore[arg-type]
            with open(self.path, "rb") as f:  # type: ignore[arg-type]
                os.fsync(f.fileno())

    def _close(self) -> None:
        self._db.close()
