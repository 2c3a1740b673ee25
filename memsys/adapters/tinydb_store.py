"""TinyDB: a TinyDB database kept as a checksummed snapshot plus an append-only journal.

Files, for ``path="memory.json"``:

* ``memory.json``: a memsys snapshot (memsys.durable.pack_snapshot: magic, a JSON
  header with the body's length and crc32, then TinyDB's tables as JSON), replaced
  atomically at creation and at each compaction;
* ``memory.json.journal``: one checksummed record per write, holding only the
  documents that write changed (memsys.durable.Journal). A commit appends one record
  and fsyncs it, so its cost follows the write set, never the store size; when the
  journal outgrows the snapshot, the snapshot is rewritten and the journal restarts.

A flipped byte anywhere but in a torn last record is a CorruptStoreError naming the
file (and, in the journal, the offset); the files are then left exactly as they are.

Items live in the ``memory_items`` table keyed by item id, as ``SerializedMemoryItem``
dicts (memory_type as the enum value; legacy records holding the enum name load).

The files stay a TinyDB database. ``JournalStorage`` is a ``tinydb.storages.Storage``::

    from tinydb import TinyDB
    from memsys.adapters.tinydb_store import JournalStorage, ItemTable
    db = TinyDB("memory.json", storage=JournalStorage)   # locks the path, like the adapter
    db.table_class = ItemTable                            # memory_items is keyed by item id (str)
    db.table("memory_items").get(doc_id="note-1")

Through TinyDB's own API each write still costs O(store size) in TinyDB itself (it
re-reads and re-writes whole tables in memory), but only the changed documents reach
the disk. The adapter bypasses that and applies its write set directly.

Legacy files (plain TinyDB JSON, as TinyDB's JSONStorage, older memsys and DevSynth
write them) are migrated on open: the original bytes are kept beside the file
(``path + ".json-backup"``, or ``path + ".devsynth-backup"`` when records had to be
re-keyed), then the snapshot replaces the file atomically; a crash in between leaves
the original, and the next open migrates again. DevSynth's stores keep items under
TinyDB's integer document ids (table ``_default`` for its TinyDBStore, ``memory_items``
for its TinyDBMemoryAdapter); the migration re-keys them by item id, so retrieve,
update and delete find them.
"""

from __future__ import annotations

import functools
import json
import logging
import os
from collections.abc import Callable, Iterable, Sequence
from typing import Any, ClassVar

from memsys.adapters._base import BaseMemoryStore, import_backend
from memsys.adapters._vector import check_bool_arg, check_int_arg, detached
from memsys.domain.errors import (
    CorruptStoreError,
    InvalidInputError,
    InvalidMemoryItemError,
    MemsysError,
    StoreClosedError,
    StoreError,
)
from memsys.domain.model import MemoryItem, decode_item
from memsys.domain.operations import Delete, Operation, Put
from memsys.domain.query import MemoryQuery
from memsys.durable import Journal, PathLock, atomic_write, os_error, remove_stale_temps
from memsys.ports import Capability

log = logging.getLogger("memsys.adapters.tinydb")

TABLE = "memory_items"
FORMAT = "memsys-tinydb-1"
JOURNAL_SUFFIX = ".journal"
JSON_BACKUP_SUFFIX = ".json-backup"
DEVSYNTH_BACKUP_SUFFIX = ".devsynth-backup"
#: DevSynth's TinyDBStore writes TinyDB's default table.
DEVSYNTH_TABLE = "_default"

Tables = dict[str, dict[str, Any]]
#: A migration: given the tables as loaded, the migrated tables and the backup suffix, or None.
Migration = Callable[[Tables], "tuple[Tables, str] | None"]


class JournalTables:
    """TinyDB's tables in memory, on disk as a memsys snapshot plus a journal (see the module doc).

    Journal records are lists of changes: ``["put", table, doc_id, document]``,
    ``["del", table, doc_id]``, ``["table", table]`` (create empty), ``["drop", table]``.
    ``JournalStorage`` (this class as a ``tinydb.storages.Storage``) is what TinyDB uses.
    """

    def __init__(self, path: str | os.PathLike[str], *, sync: bool = True, compact_bytes: int = 4 << 20,
                 lock: bool = True, migrate: Migration | None = None, store: str | None = None,
                 create_dirs: bool = True) -> None:
        # ``create_dirs`` is JSONStorage's argument, accepted so code written for it runs unchanged;
        # missing folders are always created. ``lock=False`` only when the caller holds the PathLock.
        self.path = os.path.abspath(os.fspath(path))
        self.sync = sync
        self._store = store or "tinydb"
        self.tables: Tables = {}
        self._journal: Journal | None = None
        self._lock = PathLock.acquire(self.path, owner="TinyDB JournalStorage", store=store) if lock else None
        try:
            if os.path.isdir(self.path):
                raise InvalidInputError(f"{self.path} is a folder; a TinyDB store is a file")
            self._journal = _FileJournal(self.path, compact_bytes=compact_bytes, store=self._store)
            self._open(migrate)
        except BaseException:
            self.close()
            raise

    @property
    def journal_path(self) -> str:
        return self.path + JOURNAL_SUFFIX

    # ------------------------------------------------------------------ opening

    def _open(self, migrate: Migration | None) -> None:
        journal = self._journal
        assert journal is not None
        folder = os.path.dirname(self.path)
        try:
            for target in (self.path, self.journal_path):  # a killed writer's leftovers (we hold the lock)
                remove_stale_temps(folder, os.path.basename(target))
            head = self._head()
            original: bytes | None = None
            fresh = False
            if head is None or head == b"":
                if os.path.exists(self.journal_path) and os.path.getsize(self.journal_path) > 0:
                    raise CorruptStoreError(
                        f"{self.path} is {'missing' if head is None else 'empty'} but its journal "
                        f"{self.journal_path} is not: the snapshot the journal continues is gone; restore it, "
                        "or move the journal away to start empty", path=self.path)
                fresh = True
            elif head.lstrip()[:1] == b"{":  # plain TinyDB JSON: migrate it
                with open(self.path, "rb") as f:
                    original = f.read()
                self.tables = _parse_plain_json(self.path, original)
                fresh = True
            else:
                self._load(*journal.open())
            suffix = JSON_BACKUP_SUFFIX
            before = self.tables
            migrated = migrate(self.tables) if migrate is not None else None
            if migrated is not None:
                self.tables, suffix = migrated
            if original is not None or migrated is not None:
                backup = original if original is not None else json.dumps(before, ensure_ascii=False).encode()
                self._keep_backup(backup, suffix)
            if fresh:
                self._set_aside_orphaned_journal()
            if fresh or migrated is not None:
                journal.compact(self._dump)  # atomically replaces the file: the migration's one commit point
                self._load(*journal.open())  # and read back what was written, as every later open will
        except OSError as exc:
            raise os_error(exc, f"opening {self.path}", store=self._store) from exc

    def _head(self) -> bytes | None:
        try:
            with open(self.path, "rb") as f:
                return f.read(64)
        except FileNotFoundError:
            return None

    def _load(self, snapshot: tuple[dict[str, Any], bytes] | None, batches: list[Any]) -> None:
        if snapshot is None:  # only a journal: cannot be (the snapshot is written first)
            raise CorruptStoreError(f"{self.path}: no snapshot", path=self.path)
        header, body = snapshot
        if header.get("format") != FORMAT:
            raise CorruptStoreError(f"{self.path}: unknown format {header.get('format')!r}, expected {FORMAT!r}",
                                    path=self.path)
        try:
            tables = json.loads(body)
        except ValueError as exc:
            raise CorruptStoreError(f"{self.path}: snapshot body is not JSON: {exc}", path=self.path) from exc
        _check_tables(self.path, tables)
        self.tables = tables
        for n, batch in enumerate(batches, 1):
            try:
                self._apply_batch(batch)
            except (ValueError, KeyError, TypeError, IndexError) as exc:
                raise CorruptStoreError(f"{self.journal_path}: record {n} after the snapshot is not a TinyDB "
                                        f"change list: {exc}", path=self.journal_path) from exc

    def _keep_backup(self, data: bytes, suffix: str) -> None:
        """Write the pre-migration bytes beside the file, never over a different earlier backup."""
        candidate, n = self.path + suffix, 1
        while os.path.exists(candidate):
            with open(candidate, "rb") as f:
                if f.read() == data:
                    return  # an interrupted migration already kept it
            n += 1
            candidate = f"{self.path}{suffix}.{n}"
        atomic_write(candidate, data, sync=True)
        log.warning("%s: migrated to the memsys journal format; the original is kept in %s", self.path, candidate)

    def _set_aside_orphaned_journal(self) -> None:
        """A journal beside a plain-JSON file continues a snapshot that was replaced (say, by
        restoring a backup): keep it for the operator instead of replaying it onto other data."""
        if os.path.exists(self.journal_path) and os.path.getsize(self.journal_path) > 0:
            aside, n = self.journal_path + ".orphaned", 1
            while os.path.exists(aside):
                n += 1
                aside = f"{self.journal_path}.orphaned.{n}"
            os.replace(self.journal_path, aside)
            log.warning("%s: a journal continued a snapshot that is no longer there; moved to %s", self.path, aside)

    def _dump(self) -> tuple[dict[str, Any], bytes]:
        return {"format": FORMAT}, json.dumps(self.tables, ensure_ascii=False).encode()

    # ------------------------------------------------------------------ writing

    def apply(self, batch: list[list[Any]], *, durable: bool | None = None) -> None:
        """Append ``batch`` (a change list) to the journal as one record, then apply it in memory.

        ``durable`` (default: the storage's ``sync``) fsyncs the record before returning. If the
        append fails (a full disk), memory is unchanged and the error is typed.
        """
        if not batch:
            return
        journal = self._open_journal()
        try:
            # A private copy: no document in memory is an object a caller still holds.
            private = json.loads(json.dumps(batch, ensure_ascii=False))
            for change in private:  # checked before it is logged: a logged record must replay
                _check_change(change)
        except (TypeError, ValueError) as exc:
            raise InvalidInputError(f"{self.path}: not a TinyDB change: {exc}") from exc
        try:
            journal.append(private, durable=self.sync if durable is None else durable)
        except OSError as exc:
            raise os_error(exc, f"writing {self.journal_path}", path=self.journal_path, store=self._store) from exc
        self._apply_batch(private)
        journal.maybe_compact(self._dump)  # a failure there is logged: the journal holds every batch

    def _apply_batch(self, batch: list[list[Any]]) -> None:
        tables = self.tables
        for change in batch:
            _check_change(change)
            kind, name = change[0], change[1]
            if kind == "put":
                tables.setdefault(name, {})[change[2]] = change[3]
            elif kind == "del":
                tables.get(name, {}).pop(change[2], None)
            elif kind == "table":
                tables.setdefault(name, {})
            else:
                tables.pop(name, None)

    def compact(self) -> None:
        """Rewrite the snapshot now and empty the journal."""
        try:
            self._open_journal().compact(self._dump)
        except OSError as exc:
            raise os_error(exc, f"compacting {self.path}", store=self._store) from exc

    def flush(self) -> None:
        """Make every applied write durable (after writes with ``durable=False``)."""
        try:
            self._open_journal().flush()
        except OSError as exc:
            raise os_error(exc, f"syncing {self.journal_path}", path=self.journal_path, store=self._store) from exc

    def _open_journal(self) -> Journal:
        if self._journal is None:
            raise StoreClosedError(f"{self.path} is closed")
        return self._journal

    # ------------------------------------------------------------------ tinydb.storages.Storage

    def read(self) -> Tables | None:
        """TinyDB's view: a deep copy, since TinyDB changes the documents it reads in place."""
        self._open_journal()
        return json.loads(json.dumps(self.tables, ensure_ascii=False)) if self.tables else None

    def write(self, data: Tables) -> None:
        """TinyDB hands over every table after each change; journal only what differs."""
        current = self.tables
        batch: list[list[Any]] = [["drop", name] for name in current if name not in data]
        for name, table in data.items():
            old = current.get(name)
            if old is None:
                batch.append(["table", name])
                old = {}
            keys = set()
            for doc_id, document in table.items():
                key = str(doc_id)
                keys.add(key)
                previous = old.get(key)
                if previous is None or previous != document or not _same_json(previous, document):
                    batch.append(["put", name, key, document])
            batch.extend(["del", name, key] for key in old if key not in keys)
        self.apply(batch)

    def close(self) -> None:
        journal, self._journal = self._journal, None
        try:
            if journal is not None:
                journal.close()
        finally:
            lock, self._lock = self._lock, None
            if lock is not None:
                lock.release()


class _FileJournal(Journal):
    """The Journal of one database file: the snapshot is the file itself, the log is the file's
    name plus ".journal", so several databases can share a folder."""

    def __init__(self, path: str, *, compact_bytes: int, store: str | None) -> None:
        # sync=True: each append says itself whether it is fsynced (``durable``).
        super().__init__(os.path.dirname(path), os.path.basename(path), sync=True, compact_bytes=compact_bytes,
                         store=store, log_name=os.path.basename(path) + JOURNAL_SUFFIX)


_CHANGE_SIZES = {"put": 4, "del": 3, "table": 2, "drop": 2}


def _check_change(change: Any) -> None:
    """Raise ValueError unless ``change`` is one journal change (see JournalTables)."""
    if not isinstance(change, list) or not change or _CHANGE_SIZES.get(change[0]) != len(change):
        raise ValueError(f"malformed change {str(change)[:80]}")
    if not isinstance(change[1], str) or (len(change) > 2 and not isinstance(change[2], str)):
        raise ValueError(f"table names and document ids are strings: {str(change)[:80]}")
    if change[0] == "put" and not isinstance(change[3], dict):
        raise ValueError(f"document {change[2]!r} is a {type(change[3]).__name__}, not an object")


def _same_json(a: Any, b: Any) -> bool:
    """Equal and of the same JSON types (``==`` holds for 1, 1.0 and True, which JSON tells apart)."""
    if type(a) is not type(b):
        return False
    if type(a) is dict:
        return a.keys() == b.keys() and all(_same_json(v, b[k]) for k, v in a.items())
    if type(a) is list:
        return len(a) == len(b) and all(map(_same_json, a, b))
    return a == b  # type: ignore[no-any-return]


def _parse_plain_json(path: str, data: bytes) -> Tables:
    try:
        tables = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        offset = getattr(exc, "pos", None)
        where = f" at byte {offset}" if offset is not None else ""
        raise CorruptStoreError(f"{path} is neither a memsys TinyDB snapshot nor valid TinyDB JSON{where}: {exc}",
                                path=path) from exc
    _check_tables(path, tables)
    return tables  # type: ignore[no-any-return]


def _check_tables(path: str, tables: Any) -> None:
    if not isinstance(tables, dict) or not all(isinstance(t, dict) for t in tables.values()):
        raise CorruptStoreError(f"{path} does not hold TinyDB tables", path=path)


@functools.cache
def _storage_class() -> type:
    """``JournalStorage``: built on first use, so importing memsys never imports tinydb."""
    storages = import_backend("tinydb.storages", "tinydb")

    class JournalStorage(JournalTables, storages.Storage):  # type: ignore[misc, name-defined]
        __doc__ = JournalTables.__doc__
        __module__ = __name__
        __qualname__ = "JournalStorage"

    return JournalStorage


@functools.cache
def _item_table_class() -> type:
    table = import_backend("tinydb.table", "tinydb")

    class ItemTable(table.Table):  # type: ignore[misc, name-defined]
        """A TinyDB table whose document ids are strings: memsys keys items by their id."""

        document_id_class = str
        __module__ = __name__
        __qualname__ = "ItemTable"

    return ItemTable


def __getattr__(name: str) -> Any:
    if name == "JournalStorage":
        return _storage_class()
    if name == "ItemTable":
        return _item_table_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ---------------------------------------------------------------------- DevSynth's files


def migrate_legacy_items(tables: Tables) -> tuple[Tables, str] | None:
    """Re-key items stored under TinyDB's integer document ids (DevSynth) by their item id.

    Records already keyed by their id win (memsys wrote them after DevSynth); among legacy
    records of one id the highest document id (the latest insert) wins. Each legacy record
    is brought to the current form where it reads as an item; one that does not is moved
    as it is, so reading it raises CorruptStoreError naming it. Returns None when nothing
    needs re-keying.
    """
    keyed = {key for key, record in tables.get(TABLE, {}).items()
             if isinstance(record, dict) and record.get("id") == key}
    legacy: list[tuple[int, int, str, str, dict[str, Any]]] = []  # (rank, doc id, table, key, record)
    for rank, name in enumerate((DEVSYNTH_TABLE, TABLE)):
        for key, record in tables.get(name, {}).items():
            if name == TABLE and key in keyed:
                continue
            if isinstance(record, dict) and isinstance(record.get("id"), str) and record["id"] \
                    and "content" in record and "memory_type" in record:
                legacy.append((rank, _doc_number(key), name, key, record))
            # anything else is not an item DevSynth wrote: it stays where it is
    if not legacy:
        return None
    migrated = {name: dict(table) for name, table in tables.items()}
    for _, _, name, key, _ in legacy:
        del migrated[name][key]
    items = migrated.setdefault(TABLE, {})
    for _, _, _, _, record in sorted(legacy, key=lambda entry: entry[:2]):
        if record["id"] not in keyed:  # else memsys' own record, written after DevSynth's, stays
            items[record["id"]] = _current_form(record)
    if DEVSYNTH_TABLE in migrated and not migrated[DEVSYNTH_TABLE]:
        del migrated[DEVSYNTH_TABLE]
    log.warning("re-keying %d records stored under TinyDB document ids (DevSynth) by item id", len(legacy))
    return migrated, DEVSYNTH_BACKUP_SUFFIX


def _doc_number(key: str) -> int:
    try:
        return int(key)
    except ValueError:
        return -1


def _current_form(record: dict[str, Any]) -> Any:
    """A legacy record in today's form (fixed once: e.g. a missing created_at is not re-invented at
    every read); left as it is when it does not read as an item."""
    try:
        return json.loads(json.dumps(MemoryItem.from_dict(record).to_dict(), ensure_ascii=False))
    except (MemsysError, TypeError, ValueError):
        return record


# ---------------------------------------------------------------------- the adapter


class TinyDBMemoryAdapter(BaseMemoryStore):
    atomic_apply = True  # one engine transaction / one atomic file write per batch
    backend = "tinydb"
    capabilities: ClassVar[frozenset[Capability]] = BaseMemoryStore.capabilities | {Capability.PERSISTENCE}

    def __init__(self, path: str | os.PathLike[str], *, sync: bool = True, compact_bytes: int = 4 << 20,
                 name: str | None = None) -> None:
        check_bool_arg(sync, "sync")
        check_int_arg(compact_bytes, "compact_bytes", 0, 1 << 40)
        super().__init__(path, name=name)
        if self.path is None:
            raise InvalidInputError("TinyDBMemoryAdapter needs path= (the database file)")
        import_backend("tinydb", "tinydb")  # MissingBackend naming the extra (the class below is cached)
        storage_class = _storage_class()
        self.sync = sync
        self._storage: JournalTables

        def open_storage() -> None:
            # The adapter holds the path lock (``_opening``), so the storage does not take its own.
            self._storage = storage_class(self.path, sync=sync, compact_bytes=compact_bytes, lock=False,
                                          migrate=migrate_legacy_items, store=self.name)

        with self._opening():
            self._call("open", open_storage)

    def _translate(self, exc: Exception, operation: str) -> MemsysError:
        if isinstance(exc, OSError):
            return os_error(exc, f"{self.name}: {operation} on {self.path}", store=self.name)
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
        return self._storage.tables.get(TABLE, {})  # raw, no copies: never handed out as they are

    # Records are decoded into items whose containers are copies (``detached``): a caller changing
    # what it got back never changes the store's documents.

    def _get(self, item_id: str) -> MemoryItem | None:
        record = self._records().get(item_id)
        return None if record is None else detached(self._decode(item_id, record))

    def _scan(self) -> Iterable[MemoryItem]:
        return [detached(self._decode(k, v)) for k, v in self._records().items()]

    def _search(self, query: MemoryQuery) -> list[MemoryItem]:
        records = self._records()
        if query.ids is not None:  # point reads, not a scan
            return [detached(item) for item in query.select(
                self._decode(k, records[k]) for k in sorted(query.ids) if k in records)]
        # Only records that can match, in order and up to the limit, become items (building them
        # was most of a search's time); ``matches`` still has the final word.
        keys = {id(v): k for k, v in records.items()}
        return [detached(item) for item in
                query.select_records(records.values(), lambda v: self._decode(keys[id(v)], v))]

    def _count(self) -> int:
        return len(self._records())

    def _apply(self, ops: Sequence[Operation], durable: bool) -> None:
        last: dict[str, Operation] = {}
        for op in ops:  # whole-item overwrites and removals: only the last op per id counts
            if isinstance(op, (Put, Delete)):
                last[op.item_id] = op
        existing = self._records()
        batch: list[list[Any]] = []
        for item_id, op in last.items():
            if isinstance(op, Put):
                batch.append(["put", TABLE, item_id, op.item.to_dict()])
            elif item_id in existing:
                batch.append(["del", TABLE, item_id])
        # One journal record per batch: all of it survives a crash, or none of it. Under a manager
        # with a log (durable=False, the log holds the writes) flush() makes it durable later; a
        # durable request (a write alone, or a manager without a log) is fsynced whatever sync says.
        self._storage.apply(batch, durable=durable or self.sync)

    def compact(self) -> None:
        """Rewrite the snapshot now and empty the journal."""
        self._call("compact", self._storage.compact)

    def _flush(self) -> None:
        self._storage.flush()

    def _close(self) -> None:
        self._storage.close()
