"""FAISS: a flat (exact) or HNSW index with stable ids, real deletes, and a journal.

* Ids: every item gets an int64 label of its own through ``IndexIDMap2``; an
  update gets a fresh label, so labels are never reused.
* Deletes: the flat index removes the vector; HNSW cannot remove, so the label
  is tombstoned, searched past (k + tombstones) and dropped when the index is
  rebuilt at the next compaction. Search returns exactly top_k live items
  whenever that many exist.
* Metric "cosine" stores L2-normalised vectors in an inner-product index;
  "ip" stores them as given. The caller's original embedding is kept beside
  the index, so ``retrieve_vector`` returns exactly what was stored.
* Persistence: a snapshot holding the serialised index, the items and the
  original vectors together (one file, replaced atomically), plus a journal
  of batches; a write appends one fsynced journal record. The folder is locked
  while open (a second opener gets StoreLockedError); at open, under that
  lock, the Journal removes temporary files a killed process left behind.
* Arguments are validated before FAISS sees them: FAISS aborts the whole
  process on some (an HNSW graph with M < 2), so a bad one is an
  InvalidInputError and nothing is created.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import struct
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar

from memsys.adapters._base import import_backend
from memsys.adapters._vector import VectorStoreBase, check_bool_arg, check_int_arg, detached
from memsys.domain.errors import CorruptStoreError, InvalidInputError, MemsysError, StoreError
from memsys.durable import Journal, os_error
from memsys.domain.model import MemoryItem, decode_item
from memsys.domain.operations import Delete, Operation, Put, decode_op, encode_op
from memsys.domain.query import MemoryQuery
from memsys.ports import Capability, Embedder

log = logging.getLogger("memsys.adapters.faiss")

SNAPSHOT = "faiss.snapshot"
INDEX_KINDS = ("flat", "hnsw")
#: HNSW neighbours per node: below 2 FAISS aborts the process; past a few hundred the graph's
#: memory (about 8 * M bytes per vector) is a mistake, not a setting.
HNSW_M_RANGE = (2, 256)
#: Candidate-list sizes for HNSW construction and search.
EF_RANGE = (1, 1 << 16)
#: Rebuild the HNSW index (dropping tombstones) once they outnumber the live vectors and this:
#: search looks past every tombstone, so their number must stay bounded under sustained updates.
MAX_TOMBSTONES = 1024
_LENGTH = struct.Struct("<Q")


class FAISSVectorStore(VectorStoreBase):
    atomic_apply = True  # one engine transaction / one atomic file write per batch
    backend = "faiss"
    capabilities: ClassVar[frozenset[Capability]] = VectorStoreBase.capabilities | {Capability.PERSISTENCE}

    def __init__(self, path: str | os.PathLike[str], *, embedder: Embedder | None = None,
                 dimension: int | None = None, metric: str = "cosine", index: str = "flat", hnsw_m: int = 32,
                 ef_construction: int = 200, ef_search: int = 128, sync: bool = True,
                 compact_bytes: int = 16 << 20, name: str | None = None) -> None:
        if not isinstance(index, str) or index not in INDEX_KINDS:
            raise InvalidInputError(f"index must be one of {INDEX_KINDS}, got {index!r}")
        check_int_arg(hnsw_m, "hnsw_m", *HNSW_M_RANGE)
        check_int_arg(ef_construction, "ef_construction", *EF_RANGE)
        check_int_arg(ef_search, "ef_search", *EF_RANGE)
        check_int_arg(compact_bytes, "compact_bytes", 0, 1 << 40)
        check_bool_arg(sync, "sync")
        super().__init__(path, embedder=embedder, dimension=dimension, metric=metric, name=name)
        if self.path is None:
            raise InvalidInputError("FAISSVectorStore needs path= (a folder it keeps its files in)")
        self._faiss = import_backend("faiss", "faiss")
        self._np = import_backend("numpy", "faiss")
        self.index_kind = index
        self.exact_search = index == "flat"
        self.sync = sync
        self._hnsw = (hnsw_m, ef_construction, ef_search)
        self._items: dict[str, MemoryItem] = {}
        self._labels: dict[str, int] = {}
        self._ids: dict[int, str] = {}
        self._originals: dict[str, bytes] = {}  # the caller's float32 vectors, as bytes
        self._unpack = struct.Struct(f"<{self.dimension}f").unpack
        self._pack = struct.Struct(f"<{self.dimension}f").pack
        self._tombstones: set[int] = set()
        self._next_label = 0
        self._index: Any = None
        self._journal = Journal(self.path, SNAPSHOT, sync=sync, compact_bytes=compact_bytes, store=self.name)
        with self._opening():  # the folder is ours until close(); a failed open lets it go
            self._call("open", self._open)

    # --- index

    def _new_index(self) -> Any:
        faiss = self._faiss
        if self.index_kind == "flat":
            inner = faiss.IndexFlatIP(self.dimension)
        else:
            m, ef_construction, ef_search = self._hnsw
            inner = faiss.IndexHNSWFlat(self.dimension, m, faiss.METRIC_INNER_PRODUCT)
            inner.hnsw.efConstruction = ef_construction
            inner.hnsw.efSearch = ef_search
        return faiss.IndexIDMap2(inner)

    def _prepared_matrix(self, vectors: Any) -> Any:
        matrix = self._np.ascontiguousarray(vectors, dtype=self._np.float32).reshape(-1, self.dimension).copy()
        if self.metric == "cosine":
            self._faiss.normalize_L2(matrix)
        return matrix

    # --- open, snapshot

    def _open(self) -> None:
        if os.path.exists(self.path) and not os.path.isdir(self.path):  # type: ignore[arg-type]
            raise InvalidInputError(f"{self.name}: path {self.path} is a file; FAISSVectorStore keeps a folder")
        snapshot, batches = self._journal.open()
        if snapshot is None:
            self._index = self._new_index()
            if not batches:
                self._journal.compact(self._dump)  # persist the configuration from the start
        else:
            self._load(*snapshot)
        for batch in batches:
            self._apply_to_index([decode_op(record) for record in batch])

    def _load(self, header: dict[str, Any], body: bytes) -> None:
        where = self._journal.snapshot_path
        if header.get("format") != "memsys-faiss-1":
            raise CorruptStoreError(f"{where}: unknown format {header.get('format')!r}", path=where)
        for key, mine in (("dimension", self.dimension), ("metric", self.metric), ("index", self.index_kind)):
            if header.get(key) != mine:
                raise InvalidInputError(f"{where} was built with {key}={header.get(key)!r}; this store was "
                                        f"opened with {key}={mine!r}")
        np = self._np
        meta_length = _LENGTH.unpack_from(body, 0)[0]
        meta = json.loads(body[_LENGTH.size:_LENGTH.size + meta_length])
        offset = _LENGTH.size + meta_length
        index_length = _LENGTH.unpack_from(body, offset)[0]
        offset += _LENGTH.size
        index_bytes = np.frombuffer(body[offset:offset + index_length], dtype=np.uint8)
        originals = body[offset + index_length:]
        width = 4 * self.dimension
        self._index = self._faiss.deserialize_index(index_bytes)
        if self.index_kind == "hnsw":
            self._faiss.downcast_index(self._index.index).hnsw.efSearch = self._hnsw[2]
        for n, (record, label) in enumerate(zip(meta["items"], meta["labels"])):
            item = decode_item(record)
            self._items[item.id] = item
            self._labels[item.id] = label
            self._ids[label] = item.id
            self._originals[item.id] = originals[n * width:(n + 1) * width]
        self._tombstones = set(meta["tombstones"])
        self._next_label = meta["next_label"]

    def _dump(self) -> tuple[dict[str, Any], bytes]:
        if self._tombstones:
            self._rebuild()
        ids = list(self._items)
        meta = json.dumps({"items": [self._items[i].to_dict() for i in ids], "labels": [self._labels[i] for i in ids],
                           "tombstones": sorted(self._tombstones), "next_label": self._next_label},
                          ensure_ascii=False).encode()
        index_bytes = self._faiss.serialize_index(self._index).tobytes()
        originals = b"".join(self._originals[i] for i in ids)
        header = {"format": "memsys-faiss-1", "dimension": self.dimension, "metric": self.metric,
                  "index": self.index_kind, "embedder": getattr(self.embedder, "name", "")}
        return header, _LENGTH.pack(len(meta)) + meta + _LENGTH.pack(len(index_bytes)) + index_bytes + originals

    def _rebuild(self) -> None:
        """A fresh index of the live vectors only (HNSW cannot delete in place)."""
        index = self._new_index()
        ids = list(self._items)
        if ids:
            labels = self._np.asarray([self._labels[i] for i in ids], dtype=self._np.int64)
            index.add_with_ids(self._prepared_matrix(self._matrix(ids)), labels)
        self._index = index
        self._tombstones = set()

    def _matrix(self, ids: Sequence[str]) -> Any:
        return self._np.frombuffer(b"".join(self._originals[i] for i in ids),
                                   dtype=self._np.float32).reshape(len(ids), self.dimension)

    def compact(self) -> None:
        """Rewrite the snapshot now (dropping tombstones) and empty the journal."""
        self._call("compact", self._journal.compact, self._dump)

    # --- errors

    def _translate(self, exc: Exception, operation: str) -> MemsysError:
        if isinstance(exc, OSError):
            return os_error(exc, f"{self.name}: {operation} on {self.path}", store=self.name)
        if operation == "open" and isinstance(exc, (RuntimeError, ValueError, KeyError, TypeError, struct.error)):
            return CorruptStoreError(f"{self.name}: {self.path} holds an unreadable FAISS store: {exc}",
                                     path=self.path)
        return StoreError(f"{self.name}: {operation} on {self.path} failed: {type(exc).__name__}: {exc}",
                          store=self.name)

    # --- primitives

    # Items leave and enter ``_items`` through ``detached``: what the store holds changes only
    # through its own calls, never through an object a caller kept or was given.

    def _get(self, item_id: str) -> MemoryItem | None:
        item = self._items.get(item_id)
        return None if item is None else detached(item)

    def _get_embedding(self, item_id: str) -> tuple[float, ...] | None:
        vector = self._originals.get(item_id)
        return None if vector is None else self._unpack(vector)

    def _scan(self) -> Iterable[MemoryItem]:
        return [detached(item) for item in self._items.values()]

    def _search(self, query: MemoryQuery) -> list[MemoryItem]:
        return [detached(item) for item in query.select(self._items.values())]

    def _count(self) -> int:
        return len(self._items)

    def _apply(self, ops: Sequence[Operation], durable: bool) -> None:
        if not ops:
            return
        packed = {id(op): self._pack(*op.embedding) for op in ops if isinstance(op, Put)}  # type: ignore[misc]
        records = []
        for op in ops:  # encode_op's format, reusing each vector's bytes
            if isinstance(op, Put):
                records.append({"op": "put", "item": op.item.to_dict(),
                                "embedding_b64": base64.b64encode(packed[id(op)]).decode()})
            else:
                records.append(encode_op(op))
        self._journal.append(records, durable=durable or self.sync)
        self._apply_to_index(ops, packed)
        if len(self._tombstones) > max(MAX_TOMBSTONES, len(self._items)):
            self._compact_quietly()
        else:
            self._journal.maybe_compact(self._dump)

    def _compact_quietly(self) -> None:
        """Compact now; a failure (a full disk) loses nothing: the journal holds every batch."""
        try:
            self._journal.compact(self._dump)
        except (OSError, MemsysError):
            log.warning("%s: compaction of %s failed; the journal keeps every batch", self.name, self.path,
                        exc_info=True)

    def _apply_to_index(self, ops: Sequence[Operation], packed: dict[int, bytes] | None = None) -> None:
        np = self._np
        packed = packed or {id(op): self._pack(*op.embedding) for op in ops if isinstance(op, Put)}  # type: ignore[misc]
        pending: dict[str, Put] = {}  # puts not yet in the index, added as one matrix

        def add_pending() -> None:
            if not pending:
                return
            labels = np.arange(self._next_label, self._next_label + len(pending), dtype=np.int64)
            self._next_label += len(pending)
            blobs = [packed[id(p)] for p in pending.values()]  # type: ignore[index]
            vectors = np.frombuffer(b"".join(blobs), dtype=np.float32).reshape(len(blobs), self.dimension)
            self._index.add_with_ids(self._prepared_matrix(vectors), labels)
            for put, label, blob in zip(pending.values(), labels.tolist(), blobs):
                self._items[put.item.id] = detached(put.item)
                self._labels[put.item.id] = label
                self._ids[label] = put.item.id
                self._originals[put.item.id] = blob
            pending.clear()

        for op in ops:
            if isinstance(op, Put):
                pending.pop(op.item.id, None)
                self._forget(op.item.id)
                pending[op.item.id] = op
            elif isinstance(op, Delete):
                pending.pop(op.item_id, None)
                self._forget(op.item_id)
        add_pending()

    def _forget(self, item_id: str) -> None:
        label = self._labels.pop(item_id, None)
        if label is None:
            return
        del self._ids[label]
        del self._items[item_id]
        del self._originals[item_id]
        if self.index_kind == "flat":
            self._index.remove_ids(self._np.asarray([label], dtype=self._np.int64))
        else:
            self._tombstones.add(label)

    def _similar(self, query: Any, top_k: int, where: MemoryQuery | None, embeddings: bool) -> list[tuple[Any, ...]]:
        if where is not None:  # exact scores over the matching items: a filter can exclude most of the index
            return self._exact(query, top_k, [i.id for i in self._items.values() if where.matches(i)])
        k = min(top_k + len(self._tombstones), self._index.ntotal)
        if k <= 0:
            return []
        distances, labels = self._index.search(query.reshape(1, -1), k)
        ids, items = self._ids, self._items
        hits = []
        for score, label in zip(distances[0].tolist(), labels[0].tolist()):
            item_id = ids.get(label)
            if item_id is not None:
                hits.append((detached(items[item_id]), score, None))
        if len(hits) < min(top_k, len(items)):
            # HNSW can miss live vectors (many near-duplicates, tombstones in the way); exactly top_k
            # live items are promised whenever that many exist, so score them all instead.
            return self._exact(query, top_k, list(items))
        return hits[:top_k]

    def _exact(self, query: Any, top_k: int, ids: list[str]) -> list[tuple[Any, ...]]:
        """Exact scores of ``ids`` against the query: the top_k, best first, ties by id."""
        if not ids:
            return []
        scores = self._prepared_matrix(self._matrix(ids)) @ query
        order = sorted(range(len(ids)), key=lambda j: (-float(scores[j]), ids[j]))[:top_k]
        return [(detached(self._items[ids[j]]), float(scores[j]), None) for j in order]

    def _flush(self) -> None:
        self._journal.flush()

    def _close(self) -> None:
        self._journal.close()
