"""LMDB: items as JSON values keyed by id, in native write transactions.

* One write transaction per apply, never nested: the adapter holds its lock
  around every engine call, and adapter-level transactions are buffered, so a
  thread never opens a second write transaction (DevSynth's LMDB adapter
  deadlocked exactly that way).
* The map grows (doubling) instead of failing with MapFullError.
* ``sync=True`` (default): every write is on disk when the call returns.
  ``sync=False``: writes survive a process crash at once and a power loss after
  ``flush()``; a coordinator log makes that safe, and it is ~40x faster.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar

from memsys.adapters._base import BaseMemoryStore, import_backend
from memsys.domain.errors import CorruptStoreError, MemsysError, StoreError, StoreUnavailableError
from memsys.domain.model import MemoryItem, decode_item
from memsys.domain.operations import Delete, Operation, Put
from memsys.ports import Capability

_MAX_GROWTHS = 40
_json_decode = json.JSONDecoder().decode


class LMDBMemoryAdapter(BaseMemoryStore):
    backend = "lmdb"
    capabilities: ClassVar[frozenset[Capability]] = BaseMemoryStore.capabilities | {
        Capability.PERSISTENCE, Capability.NATIVE_TRANSACTIONS}
    scratch_files = ("lock.mdb",)

    def __init__(self, path: str | os.PathLike[str], *, map_size: int = 64 << 20, sync: bool = True,
                 name: str | None = None) -> None:
        super().__init__(path, name=name)
        self._lmdb = import_backend("lmdb", "lmdb")
        self.sync = sync
        self._env: Any = None

        def open_env() -> None:
            os.makedirs(self.path, exist_ok=True)  # type: ignore[arg-type]
            self._env = self._lmdb.open(self.path, map_size=map_size, max_dbs=2, subdir=True, sync=sync,
                                        metasync=sync, readahead=False, max_readers=256)
            self._db = self._env.open_db(b"items")

        self._call("open", open_env)

    # --- errors

    def _translate(self, exc: Exception, operation: str) -> MemsysError:
        lmdb = self._lmdb
        message = f"{self.name}: {operation} on {self.path} failed: {exc}"
        if isinstance(exc, (lmdb.CorruptedError, lmdb.InvalidError, lmdb.VersionMismatchError,
                            lmdb.PageNotFoundError, lmdb.BadChecksumError)):
            return CorruptStoreError(f"{self.name}: {self.path} is not a readable LMDB environment: {exc}",
                                     path=self.path)
        if isinstance(exc, (lmdb.ReadersFullError, lmdb.LockError, lmdb.MapResizedError)):
            return StoreUnavailableError(message, store=self.name)
        if isinstance(exc, (ValueError, UnicodeDecodeError)):
            return CorruptStoreError(f"{self.name}: a record in {self.path} is not valid JSON: {exc}", path=self.path)
        return StoreError(message, store=self.name)

    # --- primitives

    @staticmethod
    def _decode(raw: bytes) -> MemoryItem:
        return decode_item(_json_decode(raw.decode("utf-8")))

    def _get(self, item_id: str) -> MemoryItem | None:
        with self._env.begin(db=self._db) as txn:
            raw = txn.get(item_id.encode())
        return None if raw is None else self._decode(raw)

    def _get_many(self, item_ids: Sequence[str]) -> dict[str, MemoryItem]:
        found = {}
        with self._env.begin(db=self._db) as txn:
            for item_id in item_ids:
                raw = txn.get(item_id.encode())
                if raw is not None:
                    found[item_id] = self._decode(raw)
        return found

    def _scan(self) -> Iterable[MemoryItem]:
        with self._env.begin(db=self._db) as txn:
            return [self._decode(raw) for _, raw in txn.cursor()]

    def _count(self) -> int:
        with self._env.begin(db=self._db) as txn:
            return int(txn.stat(self._db)["entries"])

    def _apply(self, ops: Sequence[Operation], durable: bool) -> None:
        encoded = [(op.item.id.encode(), json.dumps(op.item.to_dict(), ensure_ascii=False).encode())
                   if isinstance(op, Put) else (op.item_id.encode(), None)
                   for op in ops if isinstance(op, (Put, Delete))]
        for _ in range(_MAX_GROWTHS):
            try:
                with self._env.begin(write=True, db=self._db) as txn:
                    for key, value in encoded:
                        if value is None:
                            txn.delete(key)
                        else:
                            txn.put(key, value)
                break
            except self._lmdb.MapFullError:
                self._env.set_mapsize(self._env.info()["map_size"] * 2)
        else:  # pragma: no cover - 2**40 times the initial map
            raise StoreError(f"{self.name}: the map could not grow enough", store=self.name)
        if durable and not self.sync:
            self._env.sync(True)

    def _flush(self) -> None:
        self._env.sync(True)

    def _close(self) -> None:
        if self._env is not None:
            self._env.close()
