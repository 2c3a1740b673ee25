"""Kuzu: items as nodes, relationships as typed edges, in Cypher, in native transactions.

Schema: node table ``MemoryItem`` (id STRING PRIMARY KEY, content and metadata
as JSON text, memory_type, created_at / updated_at as INT64 microseconds since
the epoch, version) and rel table ``RELATED`` (rel_type, properties as JSON).
Every query is parameterised Cypher; hot single-row queries are prepared once.

A batch is one ``BEGIN TRANSACTION`` ... ``COMMIT`` in which runs of the same
kind of operation go as one UNWIND statement. Kuzu allows one write
transaction at a time; the adapter lock serialises them.

Kuzu's upstream repository was archived in 2025. Where its successor with the
same Python API (LadybugDB: ``real_ladybug`` or ``ladybug``) is installed
instead, the adapter uses it.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterable, Sequence
from itertools import groupby
from typing import Any, ClassVar

from memsys.adapters._base import import_backend
from memsys.adapters._graph import GraphStoreBase
from memsys.domain.errors import (
    CorruptStoreError,
    MemsysError,
    MissingBackend,
    StoreError,
    StoreUnavailableError,
)
from memsys.domain.model import MemoryItem, Relationship, from_epoch_us, to_epoch_us, trusted_item
from memsys.domain.operations import Delete, Operation, Put, Relate, Unrelate
from memsys.domain.query import MemoryQuery
from memsys.ports import Capability

_FIELDS = "n.id, n.content, n.memory_type, n.metadata, n.created_at, n.updated_at, n.version"
_SET = ("n.content = r.content, n.memory_type = r.memory_type, n.metadata = r.metadata, "
        "n.created_at = r.created_at, n.updated_at = r.updated_at, n.version = r.version")
_QUERIES = {
    "get": f"MATCH (n:MemoryItem) WHERE n.id = $id RETURN {_FIELDS}",
    "create": ("CREATE (n:MemoryItem {id: $id, content: $content, memory_type: $memory_type, "
               "metadata: $metadata, created_at: $created_at, updated_at: $updated_at, version: $version})"),
    "update": ("MATCH (n:MemoryItem) WHERE n.id = $id SET n.content = $content, n.memory_type = $memory_type, "
               "n.metadata = $metadata, n.created_at = $created_at, n.updated_at = $updated_at, "
               "n.version = $version"),
}
_CREATE_MANY = ("UNWIND $rows AS r CREATE (n:MemoryItem {id: r.id, content: r.content, memory_type: r.memory_type, "
                "metadata: r.metadata, created_at: r.created_at, updated_at: r.updated_at, version: r.version})")
_BATCH = {
    Put: f"UNWIND $rows AS r MATCH (n:MemoryItem {{id: r.id}}) SET {_SET}",
    Delete: "UNWIND $rows AS i MATCH (n:MemoryItem {id: i}) DETACH DELETE n",
    Relate: ("UNWIND $rows AS r MATCH (a:MemoryItem {id: r.s}), (b:MemoryItem {id: r.t}) "
             "MERGE (a)-[e:RELATED {rel_type: r.type}]->(b) SET e.properties = r.p"),
    Unrelate: ("UNWIND $rows AS r MATCH (a:MemoryItem {id: r.s})-[e:RELATED]->(b:MemoryItem {id: r.t}) "
               "WHERE e.rel_type = r.type DELETE e"),
}


def _import_kuzu() -> Any:
    for module in ("kuzu", "real_ladybug", "ladybug"):
        try:
            candidate = import_backend(module, "kuzu")
        except MissingBackend:
            continue
        if hasattr(candidate, "Database") and hasattr(candidate, "Connection"):
            return candidate
    raise MissingBackend("kuzu", "kuzu")


class KuzuMemoryAdapter(GraphStoreBase):
    backend = "kuzu"
    capabilities: ClassVar[frozenset[Capability]] = GraphStoreBase.capabilities | {
        Capability.PERSISTENCE, Capability.NATIVE_TRANSACTIONS}
    scratch_files = ("*.wal", "*.lock")

    def __init__(self, path: str | os.PathLike[str], *, buffer_pool_size: int = 256 << 20,
                 name: str | None = None) -> None:
        super().__init__(path, name=name)
        self._kuzu = _import_kuzu()
        self._db: Any = None
        self._con: Any = None

        def open_db() -> None:
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)  # type: ignore[arg-type]
            self._db = self._kuzu.Database(self.path, buffer_pool_size=buffer_pool_size, max_db_size=1 << 38)
            self._con = self._kuzu.Connection(self._db)
            self._con.execute(
                "CREATE NODE TABLE IF NOT EXISTS MemoryItem(id STRING PRIMARY KEY, content STRING, "
                "memory_type STRING, metadata STRING, created_at INT64, updated_at INT64, version INT64)")
            self._con.execute("CREATE REL TABLE IF NOT EXISTS RELATED(FROM MemoryItem TO MemoryItem, "
                              "rel_type STRING, properties STRING)")
            with warnings.catch_warnings():
                # Kuzu deprecates prepare(); a prepared statement still halves the cost of a lookup.
                warnings.simplefilter("ignore", DeprecationWarning)
                self._prepared = {name: self._con.prepare(q) for name, q in _QUERIES.items()}

        self._call("open", open_db)

    # --- errors

    def _translate(self, exc: Exception, operation: str) -> MemsysError:
        text = str(exc)
        message = f"{self.name}: {operation} on {self.path} failed: {text}"
        if any(m in text for m in ("not a valid Kuzu database", "Unable to open database", "storage version",
                                   "checksum", "corrupted", "Corrupted", "WAL")):
            return CorruptStoreError(f"{self.name}: {self.path} is not a readable Kuzu database: {text}",
                                     path=self.path)
        if "Only one write transaction" in text or "Could not set lock" in text or "lock on file" in text:
            return StoreUnavailableError(message, store=self.name)
        return StoreError(message, store=self.name)

    # --- helpers

    def _rows(self, query: Any, params: dict[str, Any] | None = None) -> list[list[Any]]:
        result = self._con.execute(query, params or {})
        rows = []
        while result.has_next():
            rows.append(result.get_next())
        return rows

    @staticmethod
    def _params(item: MemoryItem) -> dict[str, Any]:
        return {"id": item.id, "content": json.dumps(item.content, ensure_ascii=False),
                "memory_type": item.memory_type.value, "metadata": json.dumps(item.metadata, ensure_ascii=False),
                "created_at": to_epoch_us(item.created_at), "updated_at": to_epoch_us(item.updated_at),  # type: ignore[arg-type]
                "version": item.version}

    @staticmethod
    def _item(row: Sequence[Any]) -> MemoryItem:
        return trusted_item(row[0], json.loads(row[1]), row[2], json.loads(row[3]), from_epoch_us(row[4]),
                            from_epoch_us(row[5]), row[6])

    @staticmethod
    def _relationship(row: Sequence[Any]) -> Relationship:
        return Relationship(row[0], row[1], row[2], json.loads(row[3]) if row[3] else {})

    # --- items

    def _get(self, item_id: str) -> MemoryItem | None:
        rows = self._rows(self._prepared["get"], {"id": item_id})
        return self._item(rows[0]) if rows else None

    def _get_many(self, item_ids: Sequence[str]) -> dict[str, MemoryItem]:
        rows = self._rows(f"UNWIND $ids AS i MATCH (n:MemoryItem {{id: i}}) RETURN {_FIELDS}", {"ids": list(item_ids)})
        return {row[0]: self._item(row) for row in rows}

    def _scan(self) -> Iterable[MemoryItem]:
        return [self._item(row) for row in self._rows(f"MATCH (n:MemoryItem) RETURN {_FIELDS}")]

    def _count(self) -> int:
        return int(self._rows("MATCH (n:MemoryItem) RETURN count(n)")[0][0])

    def _search(self, query: MemoryQuery) -> list[MemoryItem]:
        where, params = [], {}
        if query.ids is not None:
            return query.select(self._get_many(sorted(query.ids)).values())
        if query.memory_types is not None:
            where.append("n.memory_type IN $types")
            params["types"] = sorted(t.value for t in query.memory_types)
        for name, field, bound, op in (("ca", "created_at", query.created_after, ">="),
                                       ("cb", "created_at", query.created_before, "<"),
                                       ("ua", "updated_at", query.updated_after, ">="),
                                       ("ub", "updated_at", query.updated_before, "<")):
            if bound is not None:
                where.append(f"n.{field} {op} ${name}")
                params[name] = to_epoch_us(bound)
        cypher = "MATCH (n:MemoryItem)" + (" WHERE " + " AND ".join(where) if where else "")
        rows = self._rows(f"{cypher} RETURN {_FIELDS}", params)
        return query.select(self._item(row) for row in rows)

    def _apply(self, ops: Sequence[Operation], durable: bool) -> None:
        if not ops:
            return
        if len(ops) == 1 and isinstance(ops[0], Put):
            params = self._params(ops[0].item)
            try:
                self._con.execute(self._prepared["create"], params)
            except RuntimeError as exc:
                if "duplicated primary key" not in str(exc):
                    raise
                self._con.execute(self._prepared["update"], params)
            return
        if all(isinstance(op, Put) for op in ops):
            rows = _batch_rows(Put, list(ops))
            try:  # new ids, the common case: one statement, atomic on its own
                self._con.execute(_CREATE_MANY, {"rows": rows})
                return
            except RuntimeError as exc:
                if "duplicated primary key" not in str(exc):
                    raise
        self._con.execute("BEGIN TRANSACTION")
        try:
            for kind, run in groupby(ops, key=type):
                rows = _batch_rows(kind, list(run))
                if kind is Put:  # CREATE is twice as fast as MERGE: create the new ids, update the rest
                    # UNWIND + MATCH by key uses the primary-key index; `WHERE id IN $ids` scans the table.
                    existing = {row[0] for row in self._rows(
                        "UNWIND $ids AS i MATCH (n:MemoryItem {id: i}) RETURN n.id", {"ids": [r["id"] for r in rows]})}
                    created = [r for r in rows if r["id"] not in existing]
                    if created:
                        self._con.execute(_CREATE_MANY, {"rows": created})
                    rows = [r for r in rows if r["id"] in existing]
                    if not rows:
                        continue
                self._con.execute(_BATCH[kind], {"rows": rows})
            self._con.execute("COMMIT")
        except BaseException:
            self._con.execute("ROLLBACK")
            raise

    def _close(self) -> None:
        if self._con is not None:
            self._con.close()
        if self._db is not None:
            self._db.close()

    # --- graph

    def _get_edge(self, source_id: str, target_id: str, rel_type: str) -> Relationship | None:
        rows = self._rows("MATCH (a:MemoryItem {id: $s})-[e:RELATED]->(b:MemoryItem {id: $t}) "
                          "WHERE e.rel_type = $type RETURN a.id, b.id, e.rel_type, e.properties",
                          {"s": source_id, "t": target_id, "type": rel_type})
        return self._relationship(rows[0]) if rows else None

    def _edges(self, item_id: str, direction: str, rel_type: str | None) -> list[Relationship]:
        type_filter = " AND e.rel_type = $type" if rel_type is not None else ""
        params: dict[str, Any] = {"id": item_id, **({"type": rel_type} if rel_type is not None else {})}
        rows: list[list[Any]] = []
        if direction in ("out", "both"):
            rows += self._rows("MATCH (a:MemoryItem)-[e:RELATED]->(b:MemoryItem) WHERE a.id = $id"
                               f"{type_filter} RETURN a.id, b.id, e.rel_type, e.properties", params)
        if direction in ("in", "both"):
            loops = " AND a.id <> b.id" if direction == "both" else ""
            rows += self._rows("MATCH (a:MemoryItem)-[e:RELATED]->(b:MemoryItem) WHERE b.id = $id"
                               f"{type_filter}{loops} RETURN a.id, b.id, e.rel_type, e.properties", params)
        return [self._relationship(row) for row in rows]

    def _scan_relationships(self) -> Iterable[Relationship]:
        return [self._relationship(row) for row in self._rows(
            "MATCH (a:MemoryItem)-[e:RELATED]->(b:MemoryItem) RETURN a.id, b.id, e.rel_type, e.properties")]


def _batch_rows(kind: type, ops: list[Operation]) -> list[Any]:
    if kind is Put:
        last = {op.item.id: op for op in ops}  # type: ignore[union-attr]  # consecutive puts: the last one wins
        return [KuzuMemoryAdapter._params(op.item) for op in last.values()]  # type: ignore[union-attr]
    if kind is Delete:
        return list(dict.fromkeys(op.item_id for op in ops))  # type: ignore[union-attr]
    if kind is Relate:
        last_rel = {op.relationship.key: op.relationship for op in ops}  # type: ignore[union-attr]
        return [{"s": r.source_id, "t": r.target_id, "type": r.rel_type, "p": json.dumps(r.properties)}
                for r in last_rel.values()]
    return [{"s": op.source_id, "t": op.target_id, "type": op.rel_type} for op in ops]  # type: ignore[union-attr]
