"""DuckDB: a typed table of items, native transactions, structured and SQL queries.

Table ``memory_items``: id VARCHAR PRIMARY KEY, content JSON, memory_type
VARCHAR, metadata JSON, created_at / updated_at TIMESTAMP (UTC, microseconds),
version BIGINT. Every statement is parameterised.

* A single write is one autocommit statement (an INSERT, falling back to an
  UPDATE when the id exists); a batch is one transaction with one DELETE and one
  INSERT ... ON CONFLICT over lists (unnest), so a batch costs about one
  statement, not one per item.
* Prepare refuses what the engine cannot apply (``check_row``): a version
  outside BIGINT, a timestamp outside TIMESTAMP, a JSON text over DuckDB's 4 GiB
  string limit. Such an item would otherwise pass prepare and then fail every
  apply, for ever, in a manager that must redo it.
* ``search`` pushes memory type, ids, time ranges and string metadata
  equality down to SQL; metadata keys go as RFC 6901 JSON Pointers, which can
  name any key ("", non-ASCII, control characters, quotes, dots). The shared
  matcher has the final word.
* ``query_sql`` runs one SELECT over ``memory_items`` on its own cursor, in a
  READ ONLY transaction, so the engine itself refuses a write hidden in a CTE;
  it does not hold the store lock while it runs (other calls proceed), and it
  is interrupted at its deadline (DeadlineExceededError).
* The path is locked against a second opener (StoreLockedError naming the
  holder; DuckDB's own lock error, from a process outside memsys, too). A full
  disk is DiskFullError; when DuckDB invalidates the database after a fatal
  error (a checkpoint on a full disk), the next call reopens it from its files.
* ``sync=True`` fsyncs every commit; ``sync=False`` (fsync_mode NONE) leaves
  durability to a coordinator log and ``flush()`` (CHECKPOINT).
* Limit: DuckDB checksums its blocks and WAL entries, but its WAL replay takes a
  damaged entry length for a torn tail and stops there without an error, so
  damage inside ``*.wal`` can drop commits after it (measured: one flipped bit
  kept 29 of 200 rows). Nothing at this level can tell that from a crash.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, ClassVar

from memsys.adapters._base import BaseMemoryStore, import_backend
from memsys.domain.errors import (
    CorruptStoreError,
    DeadlineExceededError,
    DiskFullError,
    InvalidInputError,
    InvalidMemoryItemError,
    InvalidQueryError,
    MemsysError,
    ReadOnlyStoreError,
    StoreClosedError,
    StoreError,
    StoreLockedError,
    StoreUnavailableError,
)
from memsys.domain.model import MemoryItem, from_epoch_us, to_epoch_us, trusted_item
from memsys.domain.operations import Delete, Operation, Put
from memsys.domain.query import MemoryQuery
from memsys.durable import os_error
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

#: BIGINT, the type of ``version``.
BIGINT_MIN, BIGINT_MAX = -(2**63), 2**63 - 1
#: TIMESTAMP holds microseconds in an int64 whose two extremes mean -infinity / infinity.
TIMESTAMP_US_MIN, TIMESTAMP_US_MAX = -(2**63) + 2, 2**63 - 2
#: DuckDB's largest string (VARCHAR, JSON): 4 GiB (its documented limit; a 1 GiB JSON text
#: was stored and read back in a measurement, 2 GiB exhausted the test machine's memory first).
MAX_TEXT_BYTES = 2**32 - 1

_DISK_FULL = ("No space left on device", "Disk quota exceeded", "File too large")
_READ_ONLY = ("Read-only file system", "Permission denied")
_CORRUPT = ("not a valid DuckDB database", "Corrupt", "replaying WAL", "checksum", "storage version",
            "Could not read enough bytes")
_LOCK_HOLDER = re.compile(r"Conflicting lock is held in (.*?)(?: by user [^.\s]+)?\.?(?: See also|$)", re.S)


def json_pointer(key: str) -> str:
    """The RFC 6901 JSON Pointer of a top-level key: any string, escaped only for "~" and "/"."""
    return "/" + key.replace("~", "~0").replace("/", "~1")


def check_row(item: MemoryItem, store: str) -> list[Any]:
    """The row DuckDB stores for ``item``; InvalidMemoryItemError for what DuckDB cannot hold."""
    where = f"{store}: item {item.id!r}"
    version = item.version
    if not BIGINT_MIN <= version <= BIGINT_MAX:
        raise InvalidMemoryItemError(f"{where}: version {version} is outside DuckDB's BIGINT range "
                                     f"[{BIGINT_MIN}, {BIGINT_MAX}]")
    row: list[Any] = [item.id]
    for field, value in (("content", item.content), ("metadata", item.metadata)):
        try:
            text = json.dumps(value, ensure_ascii=False)
        except (ValueError, TypeError, RecursionError) as exc:
            raise InvalidMemoryItemError(f"{where}: {field} cannot be written as JSON: {exc}") from exc
        if len(text) > MAX_TEXT_BYTES // 4 and len(text.encode("utf-8")) > MAX_TEXT_BYTES:
            raise InvalidMemoryItemError(f"{where}: {field} is {len(text.encode('utf-8'))} bytes of JSON; "
                                         f"DuckDB stores at most {MAX_TEXT_BYTES} bytes in one value")
        row.append(text)
    row.insert(2, item.memory_type.value)
    for field, stamp in (("created_at", item.created_at), ("updated_at", item.updated_at)):
        micros = to_epoch_us(stamp)  # type: ignore[arg-type]
        if not TIMESTAMP_US_MIN <= micros <= TIMESTAMP_US_MAX:
            raise InvalidMemoryItemError(f"{where}: {field} {stamp} is outside DuckDB's TIMESTAMP range")
        row.append(micros)
    row.append(version)
    return row  # id, content, memory_type, metadata, created_at, updated_at, version


class DuckDBMemoryAdapter(BaseMemoryStore):
    atomic_apply = True  # one engine transaction / one atomic file write per batch
    backend = "duckdb"
    capabilities: ClassVar[frozenset[Capability]] = BaseMemoryStore.capabilities | {
        Capability.PERSISTENCE, Capability.NATIVE_TRANSACTIONS, Capability.STRUCTURED_QUERY}
    scratch_files = ("*.wal",)

    def __init__(self, path: str | os.PathLike[str], *, sync: bool = True, query_timeout: float = 30.0,
                 name: str | None = None) -> None:
        super().__init__(path, name=name)
        self._duckdb = import_backend("duckdb", "duckdb")
        self.sync = sync
        self.query_timeout = _check_timeout(query_timeout)
        self._con: Any = None
        self._fsync_mode: str | None = None
        self._invalidated = False
        # Cursors of running query_sql calls, so that close() and a reopen can interrupt them.
        self._queries: set[Any] = set()
        self._queries_done = threading.Condition(threading.Lock())
        with self._opening():
            self._call("open", self._open_db)

    def _open_db(self) -> None:
        parent = os.path.dirname(os.path.abspath(self.path))  # type: ignore[arg-type]
        os.makedirs(parent, exist_ok=True)
        self._con = self._duckdb.connect(self.path, config={"enable_external_access": False})
        self._fsync_mode = None
        try:
            self._set_fsync("STANDARD" if self.sync else "NONE")
            self._con.execute(
                f"CREATE TABLE IF NOT EXISTS {TABLE} (id VARCHAR PRIMARY KEY, content JSON NOT NULL, "
                "memory_type VARCHAR NOT NULL, metadata JSON NOT NULL, created_at TIMESTAMP NOT NULL, "
                "updated_at TIMESTAMP NOT NULL, version BIGINT NOT NULL)")
        except BaseException:
            self._con.close()
            self._con = None
            raise

    def _call(self, operation: str, fn: Any, *args: Any) -> Any:
        def run() -> Any:
            if self._invalidated:
                self._reopen()
            try:
                return fn(*args)
            except self._duckdb.FatalException:
                # DuckDB refuses every later call on this database until it is reopened.
                self._invalidated = True
                raise

        return super()._call(operation, run)

    def _reopen(self) -> None:
        """Open the database again after DuckDB invalidated it (its WAL replays what was committed)."""
        self._stop_queries()
        con, self._con = self._con, None
        if con is not None:
            try:
                con.close()
            except self._duckdb.Error:
                pass
        self._open_db()
        self._invalidated = False

    # --- errors

    def _translate(self, exc: Exception, operation: str) -> MemsysError:
        duckdb = self._duckdb
        text = str(exc)
        message = f"{self.name}: {operation} on {self.path} failed: {exc}"
        if isinstance(exc, OSError):
            return os_error(exc, f"{self.name}: {operation}", path=exc.filename or self.path, store=self.name)
        if any(marker in text for marker in _DISK_FULL):
            return DiskFullError(f"{message}; the disk is full: what failed was not applied; free space and retry",
                                 store=self.name, path=self.path)
        if any(marker in text for marker in _READ_ONLY):
            return ReadOnlyStoreError(message, store=self.name, path=self.path)
        if "Could not set lock" in text:  # another process (not a memsys adapter) has it open
            found = _LOCK_HOLDER.search(text)
            holder = found.group(1).strip() if found else "another process"
            return StoreLockedError(f"{self.path} is already open ({holder}); close it there first",
                                    store=self.name, path=self.path, holder=holder)
        if isinstance(exc, duckdb.SerializationException) or any(marker in text for marker in _CORRUPT):
            return CorruptStoreError(f"{self.name}: {self.path} is not a readable DuckDB database: {exc}",
                                     path=self.path)
        if isinstance(exc, duckdb.InterruptException):
            return DeadlineExceededError(message, store=self.name)
        if isinstance(exc, duckdb.TransactionException):
            return StoreUnavailableError(message, store=self.name)
        if isinstance(exc, ValueError):
            return CorruptStoreError(f"{self.name}: a row in {self.path} holds invalid JSON: {exc}", path=self.path)
        return StoreError(message, store=self.name)

    def _set_fsync(self, mode: str) -> None:
        if self._fsync_mode != mode:
            self._con.execute(f"SET fsync_mode = '{mode}'")  # a constant, never caller input
            self._fsync_mode = mode

    # --- rows

    def _row(self, item: MemoryItem) -> list[Any]:
        return check_row(item, self.name)

    @staticmethod
    def _item(row: Sequence[Any]) -> MemoryItem:
        return trusted_item(row[0], json.loads(row[1]), row[2], json.loads(row[3]), from_epoch_us(row[4]),
                            from_epoch_us(row[5]), row[6])

    def _prepare_op(self, op: Operation) -> Operation:
        if isinstance(op, Put):
            self._row(op.item)  # refuse now what the engine would refuse at apply
        return op

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
                # A bound JSON Pointer names any key exactly; a JSONPath built from the key did not
                # ("café", "", control characters).
                where.append("json_type(metadata, ?) = 'VARCHAR' AND json_extract_string(metadata, ?) = ?")
                pointer = json_pointer(key)
                params.extend([pointer, pointer, value])
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
        if len(ops) == 1 and isinstance(ops[0], Put):
            row = self._row(ops[0].item)
            self._set_fsync("STANDARD" if durable or self.sync else "NONE")
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
        self._set_fsync("STANDARD" if durable or self.sync else "NONE")
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
            try:
                self._con.execute("ROLLBACK")
            except self._duckdb.Error:
                pass  # a failed COMMIT already ended the transaction: keep the real error
            raise

    def _flush(self) -> None:
        self._set_fsync("STANDARD")
        self._con.execute("CHECKPOINT")

    def _close(self) -> None:
        self._stop_queries()
        if self._con is not None:
            self._con.close()

    # --- structured queries

    def query_sql(self, sql: str, params: Sequence[Any] | Mapping[str, Any] | None = None, *,
                  timeout: float | None = None) -> list[dict[str, Any]]:
        """Run one read-only SELECT (over ``memory_items``) and return rows as dicts.

        The query runs on its own cursor in a READ ONLY transaction (DuckDB refuses any write
        in it, a DELETE inside a CTE included), without the store lock, and is interrupted
        after ``timeout`` seconds (default ``query_timeout``) with DeadlineExceededError.
        """
        if not isinstance(sql, str) or not sql.strip():
            raise InvalidQueryError("query_sql takes a non-empty SQL string")
        if params is None:
            bound: Any = []
        elif isinstance(params, Mapping):
            bound = dict(params)  # named parameters ($name)
        elif isinstance(params, Sequence) and not isinstance(params, (str, bytes)):
            bound = list(params)
        else:
            raise InvalidQueryError(f"query_sql params must be a list or a dict, got {type(params).__name__}")
        limit = self.query_timeout if timeout is None else _check_timeout(timeout)
        duckdb = self._duckdb
        cursor = self._call("query_sql", self._query_cursor, sql)
        expired = threading.Event()

        def interrupt() -> None:
            expired.set()
            cursor.interrupt()

        timer = threading.Timer(limit, interrupt)
        timer.daemon = True
        timer.start()
        try:
            if self._closed:
                raise StoreClosedError(f"{self.name}: query_sql on a closed store ({self.path})")
            cursor.execute("BEGIN TRANSACTION READ ONLY")
            result = cursor.execute(sql, bound)
            names = [d[0] for d in result.description]
            return [dict(zip(names, row)) for row in result.fetchall()]
        except duckdb.Error as exc:
            if self._closed:
                raise StoreClosedError(f"{self.name}: query_sql: the store was closed while the query ran "
                                       f"({self.path})") from exc
            if isinstance(exc, duckdb.InterruptException):
                if expired.is_set():
                    raise DeadlineExceededError(f"{self.name}: query_sql ran past its deadline of {limit} s and "
                                                "was interrupted", store=self.name) from exc
                raise StoreUnavailableError(f"{self.name}: query_sql was interrupted: the database was reopened "
                                            "while it ran; run it again", store=self.name) from exc
            if isinstance(exc, duckdb.FatalException):
                self._invalidated = True  # the next call reopens the database
            if isinstance(exc, (duckdb.ParserException, duckdb.BinderException, duckdb.CatalogException,
                                duckdb.InvalidInputException, duckdb.ConversionException,
                                duckdb.PermissionException, duckdb.TransactionException,
                                duckdb.NotImplementedException, duckdb.OutOfRangeException)):
                # The query itself is refused (a write in the read-only transaction, FORCE
                # CHECKPOINT, bad SQL): the same query fails again, so it is not transient.
                raise InvalidQueryError(f"{self.name}: query refused: {exc}") from exc
            raise self._translate(exc, "query_sql") from exc
        finally:
            timer.cancel()
            self._end_query(cursor)

    def _query_cursor(self, sql: str) -> Any:
        duckdb = self._duckdb
        try:
            statements = self._con.extract_statements(sql)
        except duckdb.Error as exc:
            raise InvalidQueryError(f"{self.name}: cannot parse SQL: {exc}") from exc
        if len(statements) != 1 or statements[0].type != duckdb.StatementType.SELECT:
            kinds = ", ".join(s.type.name for s in statements)
            raise InvalidQueryError(f"{self.name}: query_sql runs one read-only SELECT; got {kinds}")
        cursor = self._con.cursor()  # a connection of its own to the same database
        with self._queries_done:
            self._queries.add(cursor)
        return cursor

    def _end_query(self, cursor: Any) -> None:
        try:
            cursor.close()  # ends its read-only transaction
        except self._duckdb.Error:
            pass  # closed already, with the database
        with self._queries_done:
            self._queries.discard(cursor)
            self._queries_done.notify_all()

    def _stop_queries(self, wait: float = 10.0) -> None:
        """Interrupt running queries and wait (bounded) until they have let go of their cursors.
        Interrupting again every few milliseconds catches a query that was just starting."""
        deadline = time.monotonic() + wait
        with self._queries_done:
            while self._queries and time.monotonic() < deadline:
                for cursor in list(self._queries):
                    try:
                        cursor.interrupt()
                    except self._duckdb.Error:
                        pass
                self._queries_done.wait(0.02)


def _check_timeout(timeout: object) -> float:
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout < float("inf"):
        raise InvalidInputError(f"a query timeout is a positive number of seconds, got {timeout!r}")
    return float(timeout)
