"""ChromaDB: embedded (PersistentClient) or against a server (HttpClient).

* Chroma is always handed the embeddings, so its default embedding function,
  which downloads a model, is never called.
* Each record's metadata holds the whole serialised item and the caller's
  embedding (float32, base64) in one string, so nested metadata round-trips
  exactly although Chroma metadata holds only scalars, and embeddings come back
  bit for bit (Chroma's own copy is re-normalised in cosine space). A crc32 of
  that string sits beside it and is checked on every read: a damaged payload is
  a CorruptStoreError naming the id, never a different value (records written
  before the checksum existed are read without it). Beside them, scalar copies
  (memory type, timestamps) serve filter push-down. Nothing goes in Chroma's
  document field: documents are full-text indexed, which made writes four times
  slower.
* Writes are split into batches no larger than the client's maximum.
* No Chroma write is all-or-nothing as seen from here: a batch takes several
  calls, and even one call that raises may have landed (embedded Chroma appends
  to its log, then fails applying it, and replays the log at the next open). So
  every write first records the before-images of the ids it touches, undoes them
  if the write raises, and otherwise keeps the undo until it can run: a call
  that raised never lands later. Embedded, the undo is a file beside the data,
  written (fsync) before anything changes and removed once the write succeeded;
  an open that finds one rolls it back before serving, so neither a crash nor a
  ``close()`` after a failed ``restore()`` loses what was there. Against a
  server the undo is kept in memory (the data is not on this machine).
* Embedded, an engine failure (disk full, a failed compaction) can leave the
  engine wedged: its next call blocks forever, holding the GIL, so no timeout in
  this process could end it. The adapter therefore never calls a failed engine
  again: it drops it and opens a fresh one before the next call; until that
  works, calls fail fast with a typed error naming the cause.
* Before an embedded open, ``chroma.sqlite3`` is checked without writing to it
  (header, size in whole pages, ``PRAGMA quick_check`` on a read-only
  connection): Chroma writes into a damaged file before it notices the damage.
* Against a server every call has a deadline (``timeout``, seconds) for the whole
  call, whatever the network does: every socket wait of the HTTP client is
  bounded by the time left until the deadline, so a slow trickle of bytes ends
  in DeadlineExceededError as surely as silence does. Refused connections are
  StoreUnavailableError; both are transient.
* In server mode ``path`` names the collection, so reopening the same path
  reaches the same data.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import ipaddress
import json
import logging
import math
import os
import pathlib
import re
import select
import socket
import sqlite3
import struct
import threading
import time
import urllib.parse
import zlib
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from typing import Any, ClassVar

from memsys.adapters._base import import_backend
from memsys.adapters._vector import VectorStoreBase, check_int_arg
from memsys.domain.errors import (
    CorruptStoreError,
    DeadlineExceededError,
    DiskFullError,
    InvalidInputError,
    MemsysError,
    StoreError,
    StoreUnavailableError,
)
from memsys.domain.model import MemoryItem, decode_item, from_epoch_us, to_epoch_us
from memsys.domain.operations import Delete, Operation, Put
from memsys.domain.query import MemoryQuery
from memsys.durable import atomic_write, fsync_dir, os_error, pack_snapshot, remove_stale_temps, unpack_snapshot
from memsys.ports import Capability, Embedder

log = logging.getLogger("memsys.adapters.chroma")

DEFAULT_COLLECTION = "memsys_items"
PAYLOAD = "memsys"
CHECKSUM = "memsys_crc32"
DATABASE_FILE = "chroma.sqlite3"
UNDO_FILE = "memsys-undo"
DEFAULT_PORT, DEFAULT_TLS_PORT = 8000, 443
_json_decode = json.JSONDecoder().decode
# Chroma's own rule for collection names (its error message states it; checked here so a bad
# name is an InvalidInputError before anything is opened).
_COLLECTION_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{1,510}[A-Za-z0-9]\Z")
_HOST_LABEL = re.compile(r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)\Z")
_SQLITE_MAGIC = b"SQLite format 3\x00"
_DISK_FULL = ("database or disk is full", "no space left on device", "os error 28", "disk quota exceeded")
# Chroma reports a failed compaction without its cause; on a nearly full file system that is
# the disk (a fatal engine error either way).
_LOW_SPACE = 4 << 20


def _record_order(record: tuple[str, dict[str, Any] | None]) -> tuple[datetime, str] | None:
    """(created_at, id) of a (id, metadata) record as its item should have them; None if unsure."""
    stamp = record[1].get("created_at_us") if isinstance(record[1], dict) else None
    if type(stamp) is not int or type(record[0]) is not str:
        return None
    try:
        return (from_epoch_us(stamp), record[0])
    except OverflowError:  # a damaged stamp: the payload decides
        return None


class ChromaDBVectorStore(VectorStoreBase):
    backend = "chroma"
    capabilities: ClassVar[frozenset[Capability]] = VectorStoreBase.capabilities | {Capability.PERSISTENCE}
    atomic_apply = False
    exact_search = False

    def __init__(self, path: str | os.PathLike[str] | None = None, *, host: str | None = None,
                 port: int | None = None, server: str | None = None, collection: str | None = None,
                 embedder: Embedder | None = None, dimension: int | None = None, metric: str = "cosine",
                 timeout: float = 10.0, name: str | None = None) -> None:
        # Every argument is checked before anything is opened, created or contacted.
        if path is not None and not isinstance(path, (str, os.PathLike)):
            raise InvalidInputError(f"path must be a str or os.PathLike, got {type(path).__name__}")
        host, port, tls = _endpoint(host, port, server)
        if host is None and path is None:
            raise InvalidInputError("ChromaDBVectorStore needs path= (embedded) or host=/server= (client/server)")
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not math.isfinite(timeout) \
                or timeout <= 0:
            raise InvalidInputError(f"timeout must be a finite number of seconds > 0, got {timeout!r}")
        if collection is not None:
            _check_collection_name(collection)
        super().__init__(path, embedder=embedder, dimension=dimension, metric=metric, name=name)
        self._chromadb = import_backend("chromadb", "chroma")
        self._httpx = import_backend("httpx", "chroma")
        self.remote = host is not None
        self.timeout = float(timeout)
        self._host, self._port, self._tls = host, port, tls
        if self.remote:
            # No files here: the data is on the server; every call has a deadline.
            self.capabilities = (type(self).capabilities - {Capability.PERSISTENCE}) | {Capability.REMOTE}
        self.collection_name = collection or (
            DEFAULT_COLLECTION if not self.remote or path is None
            else "memsys_" + hashlib.sha1(os.path.abspath(self.path).encode()).hexdigest()[:20])  # type: ignore[arg-type]
        self._client: Any = None
        self._collection: Any = None
        self._session: Any = None
        self._batch = 1
        self._engine_error: BaseException | None = None  # why the engine was dropped, until reopened
        self._seen_failure: BaseException | None = None
        self._undo: list[dict[str, Any]] | None = None  # before-images of a write not yet undone
        # One undo file per collection: two collections may share a folder (one open at a time).
        self._undo_name = f"{UNDO_FILE}.{self.collection_name}"
        self._undo_path = None if self.remote else os.path.join(self.path, self._undo_name)  # type: ignore[arg-type]
        if self.remote:
            # Imports and set-up first: the deadline bounds the calls to the server, not Python's imports.
            self._session = _deadline_session(self._httpx, self.timeout, self._tls)
            self._client_class = _client_class(self._chromadb)
            try:
                self._call("open", self._connect)
            except BaseException:
                self._session.close()
                raise
            return
        with self._opening():
            if os.path.exists(self.path) and not os.path.isdir(self.path):  # type: ignore[arg-type]
                raise InvalidInputError(f"{self.name}: {self.path} is a file; an embedded Chroma store is a folder")
            check_database_file(os.path.join(self.path, DATABASE_FILE))  # type: ignore[arg-type]
            self._load_undo()
            self._call("open", self._open_embedded)
        if self._undo is not None:  # a write failed or crashed: put back what it changed, before serving
            try:
                self._call("undo", lambda: None)
            except MemsysError as exc:  # kept on disk; every call retries it first and fails fast until then
                log.warning("%s: the undo of an interrupted write in %s could not run yet: %s",
                            self.name, self.path, exc)

    # --- opening

    def _settings(self, **extra: Any) -> Any:
        return self._chromadb.config.Settings(anonymized_telemetry=False, allow_reset=False, **extra)

    def _open_embedded(self) -> None:
        os.makedirs(self.path, exist_ok=True)  # type: ignore[arg-type]
        try:
            client = self._chromadb.PersistentClient(path=self.path, settings=self._settings())
        except BaseException:
            # Chroma caches the half-started engine of a failed open under the path, and every later
            # open in this process would get it: drop it, so the next attempt starts afresh.
            _forget_engine(self.path)  # type: ignore[arg-type]
            raise
        try:
            self._attach(client)
        except BaseException:
            _close_quietly(client)
            raise
        self._engine_error = None

    def _connect(self) -> None:
        scheme = "https" if self._tls else "http"
        # Chroma's client makes calls while it is built: a bounded heartbeat first turns a stalled
        # server into a prompt, typed error; then the client is built on the same bounded session.
        self._session.get(f"{scheme}://{_url_host(self._host)}:{self._port}/api/v2/heartbeat").raise_for_status()
        settings = self._settings(chroma_api_impl="chromadb.api.fastapi.FastAPI",
                                  chroma_server_host=_url_host(self._host), chroma_server_http_port=self._port,
                                  chroma_server_ssl_enabled=self._tls)
        client = self._client_class(self._session, settings=settings)
        try:
            self._attach(client)
        except BaseException:
            _close_quietly(client)
            raise

    def _attach(self, client: Any) -> None:
        batch = int(client.get_max_batch_size())
        collection = client.get_or_create_collection(
            self.collection_name, embedding_function=None,
            metadata={"hnsw:space": "cosine" if self.metric == "cosine" else "ip", "memsys:dimension": self.dimension})
        stored = (collection.metadata or {}).get("memsys:dimension")
        if stored is not None and stored != self.dimension:
            raise InvalidInputError(f"{self.name}: collection {self.collection_name!r} holds {stored}-dimension "
                                    f"vectors; this store was opened with dimension={self.dimension}")
        self._client, self._collection, self._batch = client, collection, max(1, batch)

    # --- every engine call: a deadline, a healthy engine, no pending undo

    def _call(self, operation: str, fn: Any, *args: Any) -> Any:
        def run() -> Any:
            if operation != "open":
                self._settle()
            try:
                return fn(*args)
            except BaseException as exc:
                self._engine_failed(exc)
                if _is_panic(exc):  # a Rust panic is a BaseException: make it an Exception to translate
                    raise RuntimeError(f"the Chroma engine panicked: {exc}") from exc
                raise

        with deadline(self.timeout if self.remote else None):
            return super()._call(operation, run)

    def _settle(self) -> None:
        """Reopen a dropped engine and run a pending undo; raise (typed) while either fails."""
        if self._collection is None:
            if self.remote:
                raise StoreError(f"{self.name}: the client of {self._where()} is not open", store=self.name)
            cause = self._engine_error
            try:
                self._open_embedded()
            except Exception as exc:
                translated = self._translate(exc, "reopen")
                if cause is not None:  # name the fatal condition, not only the failed reopen
                    translated.args = (f"{translated} (the Chroma engine failed earlier: {type(cause).__name__}: "
                                       f"{cause}; it is reopened before each call until that works)",)
                raise translated from exc
        if self._undo is not None:
            self._apply_undo(self._undo)
            self._clear_undo()

    def _engine_failed(self, exc: BaseException) -> None:
        """Embedded: drop an engine that raised an engine error; it is never called again."""
        if self.remote or self._collection is None or exc is self._seen_failure or not self._is_engine_failure(exc):
            return
        self._engine_error = self._seen_failure = exc
        client, self._client, self._collection = self._client, None, None
        _close_quietly(client)
        log.warning("%s: the Chroma engine of %s failed (%s: %s); it is reopened before the next call",
                    self.name, self.path, type(exc).__name__, exc)

    def _is_engine_failure(self, exc: BaseException) -> bool:
        if _is_panic(exc) or (isinstance(exc, OSError) and not isinstance(exc, ConnectionError)):
            return True
        errors = self._chromadb.errors
        if isinstance(exc, errors.ChromaError):
            try:
                return int(exc.code()) >= 500
            except Exception:
                return True
        return False

    # --- errors

    def _translate(self, exc: Exception, operation: str) -> MemsysError:
        httpx = self._httpx
        where = f"{self.name}: {operation} on {self._where()} failed: {type(exc).__name__}: {exc}"
        chain = list(_exception_chain(exc))  # Chroma's client re-raises some transport errors as ValueError
        if any(isinstance(e, httpx.TimeoutException) for e in chain):
            return DeadlineExceededError(f"{where} (deadline {self.timeout}s)", store=self.name)
        if any(isinstance(e, (httpx.TransportError, ConnectionError)) for e in chain):
            return StoreUnavailableError(where, store=self.name)
        if isinstance(exc, httpx.HTTPStatusError) and exc.response.status_code >= 500:
            return StoreUnavailableError(where, store=self.name)
        if isinstance(exc, OSError):
            return os_error(exc, f"{self.name}: {operation} on {self._where()}", path=self.path, store=self.name)
        text = str(exc)
        lowered = " | ".join(str(e) for e in chain).lower()  # the cause may sit under a follow-up error
        if any(marker in lowered for marker in _DISK_FULL) or (
                not self.remote and "compaction" in lowered and self._low_on_space()):
            return DiskFullError(f"{where}; the disk is full: nothing of this call remains once its undo ran; "
                                 "free space and retry", store=self.name, path=None if self.remote else self.path)
        if not self.remote and ("not a database" in text or "malformed" in text or "corrupt" in lowered):
            return CorruptStoreError(f"{self.name}: {self.path} is not a readable Chroma database: {exc}",
                                     path=self.path)
        if self._is_engine_failure(exc):
            return StoreUnavailableError(f"{where}; the engine is reopened before the next call", store=self.name)
        if isinstance(exc, (ValueError, KeyError, TypeError)) and operation != "open":
            return CorruptStoreError(f"{self.name}: {self._where()} holds an unreadable record: {exc}",
                                     path=self.path)
        return StoreError(where, store=self.name)

    def _low_on_space(self) -> bool:
        try:
            st = os.statvfs(self.path)  # type: ignore[arg-type]
        except OSError:
            return False
        return st.f_bavail * st.f_frsize < _LOW_SPACE

    def _where(self) -> str:
        return f"collection {self.collection_name!r}" + ("" if self.remote else f" in {self.path}")

    # --- records

    @staticmethod
    def _metadata(put: Put) -> dict[str, Any]:
        item = put.item
        embedding = base64.b64encode(struct.pack(f"<{len(put.embedding)}f", *put.embedding)).decode()  # type: ignore[arg-type]
        payload = json.dumps({"item": item.to_dict(), "embedding": embedding}, ensure_ascii=False)
        return {PAYLOAD: payload, CHECKSUM: _crc(payload),
                "memory_type": item.memory_type.value, "created_at_us": to_epoch_us(item.created_at),  # type: ignore[arg-type]
                "updated_at_us": to_epoch_us(item.updated_at)}  # type: ignore[arg-type]

    def _payload(self, item_id: str, metadata: dict[str, Any] | None) -> dict[str, Any]:
        """The record's payload, checked against its crc32; CorruptStoreError naming the id if damaged."""
        text = (metadata or {}).get(PAYLOAD)
        if not isinstance(text, str):
            raise CorruptStoreError(f"{self.name}: record {item_id!r} in {self._where()} has no memsys payload",
                                    path=self.path)
        stored = metadata.get(CHECKSUM)  # type: ignore[union-attr]
        if stored is not None and stored != _crc(text):
            raise CorruptStoreError(f"{self.name}: record {item_id!r} in {self._where()} fails its checksum "
                                    f"(stored {stored}, computed {_crc(text)}): it is damaged and is not returned",
                                    path=self.path)
        try:
            payload = _json_decode(text)
            if not isinstance(payload, dict):
                raise ValueError("the payload is not a JSON object")
            return payload
        except ValueError as exc:
            raise CorruptStoreError(f"{self.name}: record {item_id!r} in {self._where()} is unreadable: {exc}",
                                    path=self.path) from exc

    def _decode(self, item_id: str, metadata: dict[str, Any] | None) -> MemoryItem:
        payload = self._payload(item_id, metadata)
        try:
            return decode_item(payload["item"])
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, MemsysError):
                raise
            raise CorruptStoreError(f"{self.name}: record {item_id!r} in {self._where()} holds no readable item: "
                                    f"{type(exc).__name__}: {exc}", path=self.path) from exc

    def _decode_embedding(self, item_id: str, metadata: dict[str, Any] | None) -> tuple[float, ...]:
        try:
            raw = base64.b64decode(self._payload(item_id, metadata)["embedding"], validate=True)
            if len(raw) % 4:
                raise ValueError(f"{len(raw)} bytes is not a whole number of float32 values")
        except (KeyError, TypeError, ValueError) as exc:
            raise CorruptStoreError(f"{self.name}: record {item_id!r} in {self._where()} holds no readable "
                                    f"embedding: {type(exc).__name__}: {exc}", path=self.path) from exc
        return struct.unpack(f"<{len(raw) // 4}f", raw)

    def _where_filter(self, query: MemoryQuery | None) -> dict[str, Any] | None:
        if query is None:
            return None
        clauses: list[dict[str, Any]] = []
        if query.memory_types is not None:
            clauses.append({"memory_type": {"$in": sorted(t.value for t in query.memory_types)}})
        for field, bound, op in (("created_at_us", query.created_after, "$gte"),
                                 ("created_at_us", query.created_before, "$lt"),
                                 ("updated_at_us", query.updated_after, "$gte"),
                                 ("updated_at_us", query.updated_before, "$lt")):
            if bound is not None:
                clauses.append({field: {op: to_epoch_us(bound)}})
        if not clauses:
            return None
        return clauses[0] if len(clauses) == 1 else {"$and": clauses}

    # --- primitives

    def _batches(self, values: Sequence[Any]) -> Iterator[Sequence[Any]]:
        for start in range(0, len(values), self._batch):
            yield values[start:start + self._batch]

    def _get(self, item_id: str) -> MemoryItem | None:
        result = self._collection.get(ids=[item_id], include=["metadatas"])
        return self._decode(item_id, result["metadatas"][0]) if result["ids"] else None

    def _get_many(self, item_ids: Sequence[str]) -> dict[str, MemoryItem]:
        found = {}
        for chunk in self._batches(item_ids):
            result = self._collection.get(ids=list(chunk), include=["metadatas"])
            found.update({i: self._decode(i, m) for i, m in zip(result["ids"], result["metadatas"])})
        return found

    def _get_embedding(self, item_id: str) -> tuple[float, ...] | None:
        result = self._collection.get(ids=[item_id], include=["metadatas"])
        return self._decode_embedding(item_id, result["metadatas"][0]) if result["ids"] else None

    def _records(self, where: dict[str, Any] | None) -> list[tuple[str, dict[str, Any]]]:
        records: list[tuple[str, dict[str, Any]]] = []
        offset = 0
        while True:
            page = self._collection.get(where=where, include=["metadatas"], limit=self._batch, offset=offset)
            records.extend(zip(page["ids"], page["metadatas"]))
            if len(page["ids"]) < self._batch:
                return records
            offset += self._batch

    def _scan(self) -> Iterable[MemoryItem]:
        return [self._decode(i, m) for i, m in self._records(None)]

    def _search(self, query: MemoryQuery) -> list[MemoryItem]:
        if query.ids is not None:
            return query.select(self._get_many(sorted(query.ids)).values())
        records = self._records(self._where_filter(query))
        # The engine cannot order, but each record carries created_at_us beside its payload:
        # order by that and id, and check and decode payloads in that order only up to the limit.
        # A record whose fields disagree with its payload sends ``select_records`` to the exact path.
        return query.select_records(records, lambda record: self._decode(*record), key=_record_order)

    def _count(self) -> int:
        return int(self._collection.count())

    def _apply(self, ops: Sequence[Operation], durable: bool) -> None:
        last: dict[str, Operation] = {}
        for op in ops:  # whole-item overwrites and removals: only the last op per id counts
            if isinstance(op, (Put, Delete)):
                last[op.item_id] = op
        deletes = [i for i, op in last.items() if isinstance(op, Delete)]
        puts = [op for op in last.values() if isinstance(op, Put)]
        for chunk in self._batches(deletes):
            self._collection.delete(ids=list(chunk))
        for chunk in self._batches(puts):
            self._collection.upsert(
                ids=[p.item.id for p in chunk],
                embeddings=[list(p.embedding) for p in chunk],  # type: ignore[arg-type]
                metadatas=[self._metadata(p) for p in chunk])

    def _similar(self, query: Any, top_k: int, where: MemoryQuery | None, embeddings: bool) -> list[tuple[Any, ...]]:
        if where is not None:  # exact scores over the matching items, as a filter may exclude most of the index
            hits = []
            for item_id, record in self._records(self._where_filter(where)):
                item, embedding = self._decode(item_id, record), self._decode_embedding(item_id, record)
                if where.matches(item):
                    hits.append((item, self.score(query, embedding), embedding if embeddings else None))
            hits.sort(key=lambda hit: (-hit[1], hit[0].id))
            return hits[:top_k]
        result = self._collection.query(query_embeddings=[query.tolist()], n_results=top_k,
                                        include=["metadatas", "distances"])
        # Chroma's cosine and ip distances are both 1 - similarity.
        return [(self._decode(i, m), 1.0 - float(dist), self._decode_embedding(i, m) if embeddings else None)
                for i, m, dist in zip(result["ids"][0], result["metadatas"][0], result["distances"][0])]

    # --- writes with an undo (see the module docstring)

    def _apply_locked(self, ops: list[Operation], durable: bool) -> None:
        self._settle()
        if not ops:
            return
        undo = self._undo_records(ops)
        self._save_undo(undo)  # durable before anything changes
        try:
            self._apply(ops, durable)
        except BaseException as exc:
            self._engine_failed(exc)  # a wedged engine must not run the undo
            self._compensate(undo)
            raise
        self._clear_undo()

    def _undo_records(self, ops: Sequence[Operation]) -> list[dict[str, Any]]:
        """Before-images of every id ``ops`` touches, as Chroma holds them (one read per batch)."""
        ids = list(dict.fromkeys(op.item_id for op in ops if isinstance(op, (Put, Delete))))
        present: dict[str, dict[str, Any]] = {}
        for chunk in self._batches(ids):
            result = self._collection.get(ids=list(chunk), include=["metadatas", "embeddings"])
            for item_id, metadata, embedding in zip(result["ids"], result["metadatas"], result["embeddings"]):
                present[item_id] = {"id": item_id, "metadata": dict(metadata or {}),
                                    "embedding": [float(x) for x in embedding]}
        return [present.get(item_id) or {"id": item_id} for item_id in ids]

    def _save_undo(self, undo: list[dict[str, Any]]) -> None:
        self._undo = undo
        self._pending_compensations = [undo]  # type: ignore[list-item]
        if self._undo_path is None:
            return
        data = pack_snapshot({"kind": "memsys chroma undo", "collection": self.collection_name},
                             json.dumps(undo, ensure_ascii=False).encode("utf-8", "surrogatepass"))
        try:
            atomic_write(self._undo_path, data)
        except OSError as exc:
            self._undo, self._pending_compensations = None, []  # nothing was changed: nothing to undo
            raise os_error(exc, f"{self.name}: saving the undo of a write to {self._where()}",
                           path=self._undo_path, store=self.name) from exc

    def _clear_undo(self) -> None:
        if self._undo_path is not None:
            try:
                os.unlink(self._undo_path)
            except FileNotFoundError:
                pass
            fsync_dir(self.path)  # type: ignore[arg-type]  # an acknowledged write must not be undone at the next open
        self._undo, self._pending_compensations = None, []

    def _load_undo(self) -> None:
        remove_stale_temps(self.path, self._undo_name)  # type: ignore[arg-type]  # we hold the path's lock
        try:
            with open(self._undo_path, "rb") as f:  # type: ignore[arg-type]
                data = f.read()
        except FileNotFoundError:
            return
        except OSError as exc:
            raise os_error(exc, f"{self.name}: reading {self._undo_path}", store=self.name) from exc
        _, body = unpack_snapshot(self._undo_path, data)  # type: ignore[arg-type]
        try:
            undo = json.loads(body)
            if not isinstance(undo, list) or not all(isinstance(r, dict) and isinstance(r.get("id"), str)
                                                     for r in undo):
                raise ValueError("not a list of records")
        except ValueError as exc:
            raise CorruptStoreError(f"{self._undo_path}: unreadable undo records: {exc}",
                                    path=self._undo_path) from exc
        self._undo = undo
        self._pending_compensations = [undo]  # type: ignore[list-item]

    def _compensate(self, undo: list[Any]) -> None:  # type: ignore[override]
        try:
            self._settle()  # reopens a dropped engine, then runs the undo
        except Exception as exc:  # expected while the cause lasts (full disk, deadline passed)
            log.warning("%s: undoing a failed write failed (%s: %s); it runs before the next call", self.name,
                        type(exc).__name__, exc)

    def _run_pending_compensations(self) -> None:
        self._settle()

    def _apply_undo(self, undo: list[dict[str, Any]]) -> None:
        absent = [r["id"] for r in undo if "metadata" not in r]
        present = [r for r in undo if "metadata" in r]
        for chunk in self._batches(absent):
            self._collection.delete(ids=list(chunk))
        for chunk in self._batches(present):
            self._collection.upsert(ids=[r["id"] for r in chunk], embeddings=[r["embedding"] for r in chunk],
                                    metadatas=[r["metadata"] for r in chunk])

    def _close(self) -> None:
        try:
            if self._undo is not None and self._collection is not None:
                try:
                    with deadline(self.timeout if self.remote else None):
                        self._apply_undo(self._undo)
                    self._clear_undo()
                except Exception as exc:
                    if self.remote:  # nowhere durable to keep it
                        log.error("%s: closing with a failed write not undone on %s: %s", self.name,
                                  self._where(), exc)
                    else:
                        log.warning("%s: the undo in %s runs at the next open: %s", self.name, self._undo_path, exc)
        finally:
            client, self._client, self._collection = self._client, None, None
            try:
                if client is not None:
                    client.close()
            finally:
                if self._session is not None:
                    self._session.close()


# --- constructor arguments


def _endpoint(host: Any, port: Any, server: Any) -> tuple[str | None, int | None, bool]:
    """(host, port, tls) from host=/port= or server=, each checked; (None, None, False) when embedded."""
    if server is not None:
        if host is not None or port is not None:
            raise InvalidInputError("give either server= or host=/port=, not both")
        return _parse_server(server)
    if host is None:
        if port is not None:
            raise InvalidInputError("port= needs host= (or use server='http://HOST:PORT')")
        return None, None, False
    return _check_host(host), DEFAULT_PORT if port is None else check_int_arg(port, "port", 1, 65535), False


def _parse_server(server: Any) -> tuple[str, int, bool]:
    if not isinstance(server, str) or not server.strip():
        raise InvalidInputError(f"server must be a URL such as 'http://HOST:PORT', got {server!r}")
    text = server.strip()
    parts = urllib.parse.urlsplit(text if "://" in text else "http://" + text)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise InvalidInputError(f"server={server!r}: the scheme must be http or https, not {parts.scheme!r}")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise InvalidInputError(f"server={server!r}: give only scheme, host and port (no path, query or fragment)")
    if parts.username is not None or parts.password is not None:
        raise InvalidInputError(f"server={server!r}: credentials in the URL are not supported")
    try:
        port = parts.port
    except ValueError as exc:
        raise InvalidInputError(f"server={server!r}: the port must be a number from 1 to 65535") from exc
    if port == 0:
        raise InvalidInputError(f"server={server!r}: the port must be a number from 1 to 65535")
    host = parts.hostname
    if not host:
        raise InvalidInputError(f"server={server!r} names no host")
    tls = scheme == "https"
    return _check_host(host), port or (DEFAULT_TLS_PORT if tls else DEFAULT_PORT), tls


def _check_host(host: Any) -> str:
    if not isinstance(host, str) or not host:
        raise InvalidInputError(f"host must be a non-empty str, got {host!r}")
    if "://" in host:
        raise InvalidInputError(f"host={host!r} is a URL: pass it as server={host!r}")
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        return str(ipaddress.ip_address(bare))
    except ValueError:
        pass
    name = bare[:-1] if bare.endswith(".") else bare
    if len(name) > 253 or not all(_HOST_LABEL.match(label) for label in name.split(".")):
        raise InvalidInputError(f"host={host!r} is neither an IP address nor a valid host name")
    return name


def _url_host(host: str | None) -> str:
    return f"[{host}]" if host and ":" in host else str(host)


def _check_collection_name(collection: Any) -> None:
    if not isinstance(collection, str) or not _COLLECTION_NAME.match(collection):
        raise InvalidInputError(f"collection must be 3 to 512 characters from [A-Za-z0-9._-], starting and ending "
                                f"with a letter or digit, got {collection!r}")


# --- files


def check_database_file(path: str) -> None:
    """Refuse a damaged Chroma ``chroma.sqlite3`` with CorruptStoreError naming it, writing nothing.

    Checks the header, that the file holds whole pages and at least the pages its header counts,
    and runs ``PRAGMA quick_check`` on a read-only connection: a linear scan, about 2 ms per MB
    measured with a warm page cache (a cold file costs what reading it from disk does). It checks
    every page and b-tree but does not cross-check indexes against their tables
    (``integrity_check`` does, at about six times the cost). A hot rollback journal beside the
    file means a crash mid-transaction: the engine rolls it back at open, and until then the file
    may legitimately look torn, so only the header is checked.
    """
    try:
        size = os.path.getsize(path)
    except FileNotFoundError:
        return  # a new store
    if size == 0:
        return  # created, never written: SQLite treats it as an empty database
    with open(path, "rb") as f:
        header = f.read(100)
    if len(header) < 100 or not header.startswith(_SQLITE_MAGIC):
        raise CorruptStoreError(f"{path} is not a SQLite database (bad header); Chroma's data is damaged. "
                                "The file was left as it is.", path=path)
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    if page_size < 512 or page_size & (page_size - 1):
        raise CorruptStoreError(f"{path}: the header gives an impossible page size {page_size}", path=path)
    hot = any(os.path.exists(path + suffix) and os.path.getsize(path + suffix) > 0 for suffix in ("-journal", "-wal"))
    if hot:
        return
    if size % page_size:
        raise CorruptStoreError(f"{path}: {size} bytes is not a whole number of {page_size}-byte pages "
                                "(truncated or extended); the file was left as it is", path=path)
    pages = int.from_bytes(header[28:32], "big")
    if header[24:28] == header[92:96] and pages * page_size > size:  # the in-header page count is valid
        raise CorruptStoreError(f"{path}: the header counts {pages} pages but the file holds {size // page_size} "
                                "(truncated); the file was left as it is", path=path)
    try:
        connection = sqlite3.connect(pathlib.Path(os.path.abspath(path)).as_uri() + "?mode=ro", uri=True)
        try:
            problems = [row[0] for row in connection.execute("PRAGMA quick_check(5)")]
        finally:
            connection.close()
    except sqlite3.DatabaseError as exc:
        raise CorruptStoreError(f"{path} is not a readable SQLite database: {exc}; the file was left as it is",
                                path=path) from exc
    if problems != ["ok"]:
        raise CorruptStoreError(f"{path} fails SQLite's quick_check: {'; '.join(problems)}; the file was left as "
                                "it is", path=path)


def _crc(text: str) -> int:
    return zlib.crc32(text.encode("utf-8", "surrogatepass"))


def _exception_chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _is_panic(exc: BaseException) -> bool:
    return type(exc).__name__ == "PanicException"


def _forget_engine(path: str) -> None:
    try:
        from chromadb.api.shared_system_client import SharedSystemClient as shared
    except ImportError:
        return
    with shared._refcount_lock:
        if shared._identifier_to_refcount.get(path, 0) > 0:
            return  # a live client uses it
        system = shared._identifier_to_system.pop(path, None)
    if system is not None:
        try:
            system.stop()
        except Exception:
            log.debug("stopping a half-started Chroma engine failed", exc_info=True)


def _close_quietly(client: Any) -> None:
    try:
        client.close()
    except Exception:
        log.debug("closing a Chroma client failed", exc_info=True)


# --- a deadline for every remote call
#
# httpx has per-operation timeouts only: a server (or a proxy) that trickles bytes keeps every
# read short while the call runs on for minutes. Here every socket wait of the HTTP client is
# bounded by the time left until the calling thread's deadline, so the call ends at its deadline
# whatever the network does, and ends in the calling thread (no abandoned request that could land
# later). The deadline is per thread: one client may serve calls of several threads.

_deadline_state = threading.local()


@contextlib.contextmanager
def deadline(seconds: float | None) -> Iterator[None]:
    """Bound every socket wait of the Chroma HTTP client in this block to ``seconds`` in all
    (an enclosing, earlier deadline wins)."""
    if seconds is None:
        yield
        return
    outer = getattr(_deadline_state, "at", None)
    at = time.monotonic() + seconds
    _deadline_state.at = at if outer is None else min(at, outer)
    try:
        yield
    finally:
        _deadline_state.at = outer


def _left(timeout: float | None, expired: type[Exception]) -> float | None:
    at = getattr(_deadline_state, "at", None)
    if at is None:
        return timeout
    left = at - time.monotonic()
    if left <= 0:
        raise expired("the call's deadline passed")
    return left if timeout is None else min(timeout, left)


_TRANSPORT: dict[str, Any] = {}


def _deadline_session(httpx: Any, timeout: float, tls: bool) -> Any:
    """An httpx client whose every socket wait is bounded by the calling thread's deadline.

    Proxies from the environment are not used: they would bypass the bounded transport.
    """
    if "class" not in _TRANSPORT:
        _TRANSPORT["class"] = _make_transport_class(httpx)
    return httpx.Client(transport=_TRANSPORT["class"](tls), timeout=httpx.Timeout(timeout), trust_env=False)


def _make_transport_class(httpx: Any) -> type:
    import httpcore

    @contextlib.contextmanager
    def mapped(on_timeout: type[Exception], on_error: type[Exception]) -> Iterator[None]:
        try:
            yield
        except socket.timeout as exc:
            raise on_timeout(str(exc) or "timed out") from exc
        except OSError as exc:
            raise on_error(str(exc)) from exc

    class Stream(httpcore.NetworkStream):
        def __init__(self, sock: socket.socket) -> None:
            self._sock = sock

        def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
            with mapped(httpcore.ReadTimeout, httpcore.ReadError):
                self._sock.settimeout(_left(timeout, httpcore.ReadTimeout))
                return self._sock.recv(max_bytes)

        def write(self, buffer: bytes, timeout: float | None = None) -> None:
            view = memoryview(buffer)
            with mapped(httpcore.WriteTimeout, httpcore.WriteError):
                while view:  # each partial send waits only for what is left of the deadline
                    self._sock.settimeout(_left(timeout, httpcore.WriteTimeout))
                    view = view[self._sock.send(view):]

        def close(self) -> None:
            self._sock.close()

        def start_tls(self, ssl_context: Any, server_hostname: str | None = None,
                      timeout: float | None = None) -> Stream:
            with mapped(httpcore.ConnectTimeout, httpcore.ConnectError):
                try:
                    self._sock.settimeout(_left(timeout, httpcore.ConnectTimeout))  # bounds the whole handshake
                    sock = ssl_context.wrap_socket(self._sock, server_hostname=server_hostname)
                except BaseException:
                    self._sock.close()
                    raise
            return Stream(sock)

        def get_extra_info(self, info: str) -> Any:
            if info == "ssl_object":
                return self._sock if hasattr(self._sock, "selected_alpn_protocol") else None
            if info == "client_addr":
                return self._sock.getsockname()
            if info == "server_addr":
                return self._sock.getpeername()
            if info == "socket":
                return self._sock
            if info == "is_readable":  # a pooled connection the server closed reads as readable
                if self._sock.fileno() < 0:
                    return True
                poller = select.poll()
                poller.register(self._sock.fileno(), select.POLLIN)
                return bool(poller.poll(0))
            return None

    class Backend(httpcore.NetworkBackend):
        def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                        socket_options: Iterable[Any] | None = None) -> Stream:
            with mapped(httpcore.ConnectTimeout, httpcore.ConnectError):
                sock = socket.create_connection((host, port), _left(timeout, httpcore.ConnectTimeout),
                                                source_address=None if local_address is None else (local_address, 0))
                try:
                    for option in socket_options or ():
                        sock.setsockopt(*option)
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                except BaseException:
                    sock.close()
                    raise
            return Stream(sock)

    class DeadlineTransport(httpx.HTTPTransport):
        def __init__(self, tls: bool) -> None:  # noqa: super().__init__ would build a pool we replace
            # httpx builds its pool without a way to pass a network backend: the same pool, with ours.
            # The TLS context (loading the CA bundle takes ~0.1 s) is built only for https.
            self._pool = httpcore.ConnectionPool(
                ssl_context=httpx.create_ssl_context(trust_env=False) if tls else None, network_backend=Backend())

    return DeadlineTransport


_CLIENT: dict[str, Any] = {}


def _client_class(chromadb: Any) -> Any:
    """Chroma's client, built on a session we give it: its constructor already makes calls."""
    if "class" in _CLIENT:
        return _CLIENT["class"]
    import chromadb.api.fastapi  # noqa: F401  (imported here, outside any deadline)
    import chromadb.telemetry.product.posthog  # noqa: F401
    from chromadb.api.client import Client

    class BoundedClient(Client):  # type: ignore[misc, valid-type]
        def __init__(self, session: Any, **kwargs: Any) -> None:
            self._memsys_session = session
            super().__init__(**kwargs)

        def _bind(self, server: Any) -> None:
            current = getattr(server, "_session", None)
            if current is None:
                raise StoreError(f"cannot bound the calls of this chromadb client ({chromadb.__version__}): "
                                 "it has no HTTP session to replace")
            if current is not self._memsys_session:
                self._memsys_session.headers.update(current.headers)
                server._session = self._memsys_session
                current.close()

        # The calls Chroma's constructor makes: put the bounded session in place before each.
        def get_user_identity(self) -> Any:
            self._bind(self._server)
            return super().get_user_identity()

        def _validate_tenant_database(self, tenant: str, database: str) -> None:
            self._bind(self._admin_client._server)  # the admin client has a server (and session) of its own
            super()._validate_tenant_database(tenant=tenant, database=database)

    _CLIENT["class"] = BoundedClient
    return BoundedClient
