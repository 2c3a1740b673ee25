"""DuckDB: a typed table of items, native transactions, structured and SQL queries.

Table ``memory_items``: id VARCHAR PRIMARY KEY, content JSON, memory_type
VARCHAR, metadata JSON, created_at / updated_at TIMESTAMP (UTC, microseconds),
version BIGINT. Every statement is parameterised.

* A single write is one autocommit statement (an INSERT, falling back to an
  UPDATE when the id exists); a batch is one transaction with one DELETE and one
  INSERT ... ON CONFLICT over lists (unnest), so a batch costs about one
  statement, not one per item.
* ``search`` pushes memory type, ids, time ranges and string metadata
  equality down to SQL; the shared matcher has the final word.
* ``query_sql`` runs one read-only SELECT over ``memory_items`` (anything else is
  refused) inside a transaction that is rolled back.
* ``sync=True`` fsyncs every commit; ``sync=False`` (fsync_mode NONE) leaves
  durability to a coordinator log and ``flush()`` (CHECKPOINT).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar

from memsys.adapters._base import BaseMemoryStore, import_backend
from memsys.domain.errors import (
    CorruptStoreError,
    InvalidQueryError,
    MemsysError,
    StoreError,
    StoreUnavailableError,
)
from memsys.domain.model import MemoryItem, from_epoch_us, to_epoch_us, trusted_item
from memsys.domain.operations import Delete, Operation, Put
from memsys.domain.query import MemoryQuery
from memsys.ports import Capability

TABLE = "memory_items"
_COLUMNS = "id, content, memory_type, metadata, epoch_us(created_at), epoch_us(updated_at), version"
_INSERT = (f"INSERT INTO {TABLE} VALUES (?, ?, ?, ?, make_timestamp(?), make_timestamp(?), ?)")
_UPDATE = (f"UPDATE {TABLE} SET content = ?, memory_type = ?, metadata = ?, created_at = make_timestamp(?), "
           "updated_at = make_timestamp(?), version = ? WHERE id = ?")
_UPSERT_MANY = (
    f"INSERT INTO {TABLE} SELECT unnest(?::VARCHAR[]), unnest(?::VARCHAR[])::JSON, unnest(?::VARCHAR[]), "
    "unnest(?::VARCHAR[])::JSON, make_timestamp(unnest(?::BIGINT[])), make_timestamp(unnest(?::BIGINT[])), "
    "unnest(?::BIGINT[]) ON CONFLICT (id) DO UPDATE SET content = excluded.content, "
    "memory_type = excluded.memory_type, metadata = excluded.metadata, created_at = excluded.created_at, "
    "updated_at = excluded.updated_at, version = excluded.version")
_DELETE_MANY = f"DELETE FROM {TABLE} WHERE id IN (SELECT unnest(?::VARCHAR[]))"
_INSERT_MANY = _UPSERT_MANY.split(" ON CONFLICT")[0]


class DuckDBMemoryAdapter(BaseMemoryStore):
    backend = "duckdb"
    capabilities: ClassVar[frozenset[Capability]] = BaseMemoryStore.capabilities | {
        Capability.PERSISTENCE, Capability.NATIVE_TRANSACTIONS, Capability.STRUCTURED_QUERY}
    scratch_files = ("*.wal",)

    def __init__(self, path: str | os.PathLike[str], *, sync: bool = True, name: str | None = None) -> None:
        super().__init__(path, name=name)
        self._duckdb = import_backend("duckdb", "duckdb")
        self.sync = sync
        self._con: Any = None
        self._fsync_mode: str | None = None

        def open_db() -> None:
            parent = os.path.dirname(os.path.abspath(self.path))  # type: ignore[arg-type]
            os.makedirs(parent, exist_ok=True)
            self._con = self._duckdb.connect(self.path, config={"enable_external_access": False})
            self._set_fsync("STANDARD" if sync else "NONE")
            self._con.execute(
                f"CREATE TABLE IF NOT EXISTS {TABLE} (id VARCHAR PRIMARY KEY, content JSON NOT NULL, "
                "memory_type VARCHAR NOT NULL, metadata JSON NOT NULL, created_at TIMESTAMP NOT NULL, "
                "updated_at TIMESTAMP NOT NULL, version BIGINT NOT NULL)")

        self._call("open", open_db)

    # --- errors

    def _translate(self, exc: Exception, operation: str) -> MemsysError:
        duckdb = self._duckdb
        text = str(exc)
        message = f"{self.name}: {operation} on {self.path} failed: {exc}"
        if isinstance(exc, (duckdb.SerializationException,)) or any(
                marker in text for marker in ("not a valid DuckDB database", "Corrupt", "replaying WAL",
                                              "checksum", "storage version")):
            return CorruptStoreError(f"{self.name}: {self.path} is not a readable DuckDB database: {exc}",
                                     path=self.path)
        if "Could not set lock" in text or isinstance(exc, duckdb.TransactionException):
            return StoreUnavailableError(message, store=self.name)
        if isinstance(exc, ValueError):
            return CorruptStoreError(f"{self.name}: a row in {self.path} holds invalid JSON: {exc}", path=self.path)
        return StoreError(message, store=self.name)

    def _set_fsync(self, mode: str) -> None:
        if self._fsync_mode != mode:
            self._con.execute(f"SET fsync_mode = '{mode}'")  # a constant, never caller input
            self._fsync_mode = mode

    # --- rows

    @staticmethod
    def _row(item: MemoryItem) -> list[Any]:
        return [item.id, json.dumps(item.content, ensure_ascii=False), item.memory_type.value,
                json.dumps(item.metadata, ensure_ascii=False), to_epoch_us(item.created_at),  # type: ignore[arg-type]
                to_epoch_us(item.updated_at), item.version]  # type: ignore[arg-type]

    @staticmethod
    def _item(row: Sequence[Any]) -> MemoryItem:
        return trusted_item(row[0], json.loads(row[1]), row[2], json.loads(row[3]), from_epoch_us(row[4]),
                            from_epoch_us(row[5]), row[6])

    # --- primitives

    def _get(self, item_id: str) -> MemoryItem | None:
        row = self._con.execute(f"SELECT {_COLUMNS} FROM {TABLE} WHERE id = ?", [item_id]).fetchone()
        return None if row is None else self._item(row)

    def _get_many(self, item_ids: Sequence[str]) -> dict[str, MemoryItem]:
        rows = self._con.execute(f"SELECT {_COLUMNS} FROM {TABLE} WHERE id IN (SELECT unnest(?::VARCHAR[]))",
                                 [list(item_ids)]).fetchall()
        return {row[0]: self._item(row) for row in rows}

    def _scan(self) -> Iterable[MemoryItem]:
        return [self._item(row) for row in self._con.execute(f"SELECT {_COLUMNS} FROM {TABLE}").fetchall()]

    def _count(self) -> int:
        return int(self._con.execute(f"SELECT count(*) FROM {TABLE}").fetchone()[0])

    def _search(self, query: MemoryQuery) -> list[MemoryItem]:
        where, params = [], []
        if query.ids is not None:
            where.append("id IN (SELECT unnest(?::VARCHAR[]))")
            params.append(sorted(query.ids))
        if query.memory_types is not None:
            where.append("memory_type IN (SELECT unnest(?::VARCHAR[]))")
            params.append(sorted(t.value for t in query.memory_types))
        for column, bound, op in (("created_at", query.created_after, ">="), ("created_at", query.created_before, "<"),
                                  ("updated_at", query.updated_after, ">="), ("updated_at", query.updated_before, "<")):
            if bound is not None:
                where.append(f"{column} {op} make_timestamp(?)")
                params.append(to_epoch_us(bound))
        exact = query.content is None
        for key, value in query.metadata:
            if isinstance(value, str):
                where.append("json_type(metadata, ?) = 'VARCHAR' AND json_extract_string(metadata, ?) = ?")
                path = "$." + json.dumps(key)
                params.extend([path, path, value])
            else:
                exact = False
        sql = f"SELECT {_COLUMNS} FROM {TABLE}"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created_at, id"
        if exact and query.limit is not None:
            sql += f" LIMIT {int(query.limit)}"
        rows = self._con.execute(sql, params).fetchall()
        return query.select(self._item(row) for row in rows)

    def _apply(self, ops: Sequence[Operation], durable: bool) -> None:
        if not ops:
            return
        self._set_fsync("STANDARD" if durable or self.sync else "NONE")
        if len(ops) == 1 and isinstance(ops[0], Put):
            row = self._row(ops[0].item)
            try:
                self._con.execute(_INSERT, row)
            except self._duckdb.ConstraintException:
                self._con.execute(_UPDATE, row[1:] + row[:1])
            return
        last: dict[str, Operation] = {}
        for op in ops:  # each op overwrites or removes a whole item: only the last one per id counts
            if isinstance(op, (Put, Delete)):
                last[op.item_id] = op
        deletes = [i for i, op in last.items() if isinstance(op, Delete)]
        rows = [self._row(op.item) for op in last.values() if isinstance(op, Put)]
        columns = [list(column) for column in zip(*rows)]
        if not deletes:
            try:  # new ids, the common case: one statement, atomic on its own
                self._con.execute(_INSERT_MANY, columns)
                return
            except self._duckdb.ConstraintException:
                pass  # some ids exist: upsert in a transaction below
        self._con.execute("BEGIN TRANSACTION")
        try:
            if deletes:
                self._con.execute(_DELETE_MANY, [deletes])
            if rows:
                self._con.execute(_UPSERT_MANY, columns)
            self._con.execute("COMMIT")
        except BaseException:
            self._con.execute("ROLLBACK")
            raise

    def _flush(self) -> None:
        self._set_fsync("STANDARD")
        self._con.execute("CHECKPOINT")

    def _close(self) -> None:
        if self._con is not None:
            self._con.close()

    # --- structured queries

    def query_sql(self, sql: str, params: Sequence[Any] | None = None) -> list[dict[str, Any]]:
        """Run one read-only SELECT (over ``memory_items``) and return rows as dicts."""
        if not isinstance(sql, str) or not sql.strip():
            raise InvalidQueryError("query_sql takes a non-empty SQL string")

        def run() -> list[dict[str, Any]]:
            duckdb = self._duckdb
            try:
                statements = self._con.extract_statements(sql)
            except duckdb.Error as exc:
                raise InvalidQueryError(f"{self.name}: cannot parse SQL: {exc}") from exc
            if len(statements) != 1 or statements[0].type != duckdb.StatementType.SELECT:
                kinds = ", ".join(s.type.name for s in statements)
                raise InvalidQueryError(f"{self.name}: query_sql runs one read-only SELECT; got {kinds}")
            self._con.execute("BEGIN TRANSACTION")
            try:
                cursor = self._con.execute(sql, list(params or []))
                names = [d[0] for d in cursor.description]
                return [dict(zip(names, row)) for row in cursor.fetchall()]
            except (duckdb.ParserException, duckdb.BinderException, duckdb.CatalogException,
                    duckdb.InvalidInputException, duckdb.ConversionException,
                    duckdb.PermissionException) as exc:
                raise InvalidQueryError(f"{self.name}: {exc}") from exc
            finally:
                self._con.execute("ROLLBACK")

        return self._call("query_sql", run)
