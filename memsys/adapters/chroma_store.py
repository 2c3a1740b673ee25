"""ChromaDB: embedded (PersistentClient) or against a server (HttpClient).

* Chroma is always handed the embeddings, so its default embedding function,
  which downloads a model, is never called.
* Each record's metadata holds the whole serialised item and the caller's
  embedding (float32, base64) in one string, so nested metadata round-trips
  exactly although Chroma metadata holds only scalars, and embeddings come back
  bit for bit (Chroma's own copy is re-normalised in cosine space). Beside it,
  scalar copies (memory type, timestamps) serve filter push-down. Nothing goes
  in Chroma's document field: documents are full-text indexed, which made
  writes four times slower.
* Writes are split into batches no larger than the client's maximum.
* A write is several Chroma calls, so it is not atomic inside Chroma: the
  adapter keeps per-item before-images and restores them if a call fails part
  way (``atomic_apply = False``).
* Against a server every call has a deadline (``timeout``, seconds): the
  client's HTTP session is given one, which Chroma's own client does not set.
  Timeouts and refused connections are transient errors.
* In server mode ``path`` names the collection, so reopening the same path
  reaches the same data.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import struct
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar

from memsys.adapters._base import import_backend
from memsys.adapters._vector import VectorStoreBase
from memsys.domain.errors import (
    CorruptStoreError,
    DeadlineExceededError,
    InvalidInputError,
    MemsysError,
    StoreError,
    StoreUnavailableError,
)
from memsys.domain.model import MemoryItem, decode_item, to_epoch_us
from memsys.domain.operations import Delete, Operation, Put
from memsys.domain.query import MemoryQuery
from memsys.ports import Capability, Embedder

DEFAULT_COLLECTION = "memsys_items"
PAYLOAD = "memsys"
_json_decode = json.JSONDecoder().decode


class ChromaDBVectorStore(VectorStoreBase):
    backend = "chroma"
    capabilities: ClassVar[frozenset[Capability]] = VectorStoreBase.capabilities | {Capability.PERSISTENCE}
    atomic_apply = False
    exact_search = False

    def __init__(self, path: str | os.PathLike[str] | None = None, *, host: str | None = None,
                 port: int | None = None, server: str | None = None, collection: str | None = None,
                 embedder: Embedder | None = None, dimension: int | None = None, metric: str = "cosine",
                 timeout: float = 10.0, name: str | None = None) -> None:
        super().__init__(path, embedder=embedder, dimension=dimension, metric=metric, name=name)
        self._chromadb = import_backend("chromadb", "chroma")
        self._httpx = import_backend("httpx", "chroma")
        if server is not None:
            host, _, port_text = server.removeprefix("http://").rstrip("/").partition(":")
            port = int(port_text or 8000)
        self.remote = host is not None
        if not self.remote and path is None:
            raise InvalidInputError("ChromaDBVectorStore needs path= (embedded) or host=/server= (client/server)")
        self.timeout = timeout
        if self.remote:
            # No files here: the data is on the server; every call has a deadline.
            self.capabilities = (type(self).capabilities - {Capability.PERSISTENCE}) | {Capability.REMOTE}
        self.collection_name = collection or (
            DEFAULT_COLLECTION if not self.remote or path is None
            else "memsys_" + hashlib.sha1(os.path.abspath(self.path).encode()).hexdigest()[:20])  # type: ignore[arg-type]
        self._client: Any = None

        def open_client() -> None:
            settings = self._chromadb.config.Settings(anonymized_telemetry=False, allow_reset=False)
            if self.remote:
                # Chroma's client makes calls while it is constructed, before a deadline can be set:
                # a bounded heartbeat first turns a stalled server into a prompt, typed error.
                self._httpx.get(f"http://{host}:{port}/api/v2/heartbeat", timeout=timeout).raise_for_status()
                self._client = self._chromadb.HttpClient(host=host, port=port, settings=settings)
                session = getattr(getattr(self._client, "_server", None), "_session", None)
                if session is None:
                    raise StoreError(f"{self.name}: cannot set a deadline on this chromadb client "
                                     f"({self._chromadb.__version__})", store=self.name)
                session.timeout = self._httpx.Timeout(timeout)
            else:
                os.makedirs(self.path, exist_ok=True)  # type: ignore[arg-type]
                self._client = self._chromadb.PersistentClient(path=self.path, settings=settings)
            self._batch = int(self._client.get_max_batch_size())
            self._collection = self._client.get_or_create_collection(
                self.collection_name, embedding_function=None,
                metadata={"hnsw:space": "cosine" if metric == "cosine" else "ip", "memsys:dimension": self.dimension})
            stored = (self._collection.metadata or {}).get("memsys:dimension")
            if stored is not None and stored != self.dimension:
                raise InvalidInputError(f"{self.name}: collection {self.collection_name!r} holds {stored}-dimension "
                                        f"vectors; this store was opened with dimension={self.dimension}")

        self._call("open", open_client)

    # --- errors

    def _translate(self, exc: Exception, operation: str) -> MemsysError:
        httpx = self._httpx
        where = f"{self.name}: {operation} on {self._where()} failed: {type(exc).__name__}: {exc}"
        if isinstance(exc, httpx.TimeoutException):
            return DeadlineExceededError(f"{where} (deadline {self.timeout}s)", store=self.name)
        if isinstance(exc, (httpx.TransportError, ConnectionError)):
            return StoreUnavailableError(where, store=self.name)
        if isinstance(exc, httpx.HTTPStatusError) and exc.response.status_code >= 500:
            return StoreUnavailableError(where, store=self.name)
        text = str(exc)
        if not self.remote and ("not a database" in text or "malformed" in text or "corrupt" in text.lower()):
            return CorruptStoreError(f"{self.name}: {self.path} is not a readable Chroma database: {exc}",
                                     path=self.path)
        if isinstance(exc, (ValueError, KeyError, TypeError)) and operation != "open":
            return CorruptStoreError(f"{self.name}: {self._where()} holds an unreadable record: {exc}",
                                     path=self.path)
        return StoreError(where, store=self.name)

    def _where(self) -> str:
        return f"collection {self.collection_name!r}" + ("" if self.remote else f" in {self.path}")

    # --- records

    @staticmethod
    def _metadata(put: Put) -> dict[str, Any]:
        item = put.item
        embedding = base64.b64encode(struct.pack(f"<{len(put.embedding)}f", *put.embedding)).decode()  # type: ignore[arg-type]
        return {PAYLOAD: json.dumps({"item": item.to_dict(), "embedding": embedding}, ensure_ascii=False),
                "memory_type": item.memory_type.value, "created_at_us": to_epoch_us(item.created_at),  # type: ignore[arg-type]
                "updated_at_us": to_epoch_us(item.updated_at)}  # type: ignore[arg-type]

    @staticmethod
    def _decode(metadata: dict[str, Any]) -> MemoryItem:
        return decode_item(_json_decode(metadata[PAYLOAD])["item"])

    @staticmethod
    def _decode_embedding(metadata: dict[str, Any]) -> tuple[float, ...]:
        raw = base64.b64decode(json.loads(metadata[PAYLOAD])["embedding"])
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

    def _get(self, item_id: str) -> MemoryItem | None:
        result = self._collection.get(ids=[item_id], include=["metadatas"])
        return self._decode(result["metadatas"][0]) if result["ids"] else None

    def _get_many(self, item_ids: Sequence[str]) -> dict[str, MemoryItem]:
        found = {}
        for start in range(0, len(item_ids), self._batch):
            result = self._collection.get(ids=list(item_ids[start:start + self._batch]), include=["metadatas"])
            found.update({i: self._decode(m) for i, m in zip(result["ids"], result["metadatas"])})
        return found

    def _get_embedding(self, item_id: str) -> tuple[float, ...] | None:
        result = self._collection.get(ids=[item_id], include=["metadatas"])
        return self._decode_embedding(result["metadatas"][0]) if result["ids"] else None

    def _records(self, where: dict[str, Any] | None) -> list[dict[str, Any]]:
        records: list[dict[str, Any]] = []
        offset = 0
        while True:
            page = self._collection.get(where=where, include=["metadatas"], limit=self._batch, offset=offset)
            records.extend(page["metadatas"])
            if len(page["ids"]) < self._batch:
                return records
            offset += self._batch

    def _scan(self) -> Iterable[MemoryItem]:
        return [self._decode(record) for record in self._records(None)]

    def _search(self, query: MemoryQuery) -> list[MemoryItem]:
        if query.ids is not None:
            return query.select(self._get_many(sorted(query.ids)).values())
        return query.select(self._decode(r) for r in self._records(self._where_filter(query)))

    def _count(self) -> int:
        return int(self._collection.count())

    def _apply(self, ops: Sequence[Operation], durable: bool) -> None:
        last: dict[str, Operation] = {}
        for op in ops:  # whole-item overwrites and removals: only the last op per id counts
            if isinstance(op, (Put, Delete)):
                last[op.item_id] = op
        deletes = [i for i, op in last.items() if isinstance(op, Delete)]
        puts = [op for op in last.values() if isinstance(op, Put)]
        for start in range(0, len(deletes), self._batch):
            self._collection.delete(ids=deletes[start:start + self._batch])
        for start in range(0, len(puts), self._batch):
            chunk = puts[start:start + self._batch]
            self._collection.upsert(
                ids=[p.item.id for p in chunk],
                embeddings=[list(p.embedding) for p in chunk],  # type: ignore[arg-type]
                metadatas=[self._metadata(p) for p in chunk])

    def _similar(self, query: Any, top_k: int, where: MemoryQuery | None, embeddings: bool) -> list[tuple[Any, ...]]:
        if where is not None:  # exact scores over the matching items, as a filter may exclude most of the index
            hits = []
            for record in self._records(self._where_filter(where)):
                item, embedding = self._decode(record), self._decode_embedding(record)
                if where.matches(item):
                    hits.append((item, self.score(query, embedding), embedding if embeddings else None))
            hits.sort(key=lambda hit: (-hit[1], hit[0].id))
            return hits[:top_k]
        result = self._collection.query(query_embeddings=[query.tolist()], n_results=top_k,
                                        include=["metadatas", "distances"])
        # Chroma's cosine and ip distances are both 1 - similarity.
        return [(self._decode(m), 1.0 - float(dist), self._decode_embedding(m) if embeddings else None)
                for m, dist in zip(result["metadatas"][0], result["distances"][0])]

    def _apply_is_atomic(self, ops: Sequence[Operation]) -> bool:
        # One Chroma call is all-or-nothing: only batches needing several calls need before-images.
        puts = sum(isinstance(op, Put) for op in ops)
        return (puts == len(ops) or puts == 0) and len(ops) <= self._batch

    def _close(self) -> None:
        if self._client is not None:
            self._client.close()
