"""Kuzu: items as nodes, relationships as typed edges, in Cypher, in native transactions.

Schema: node table ``MemoryItem`` (id STRING PRIMARY KEY, content and metadata
as JSON text, memory_type, created_at / updated_at as INT64 microseconds since
the epoch, version, crc) and rel table ``RELATED`` (rel_type, properties as
JSON, crc). Every query is parameterised Cypher; hot single-row queries are
prepared once.

A batch is one ``BEGIN TRANSACTION`` ... ``COMMIT`` in which runs of the same
kind of operation go as one UNWIND statement. Kuzu allows one write
transaction at a time; the adapter lock serialises them.

What Kuzu does not do for itself, the adapter does (each measured on kuzu 0.11):

* Memory. An update keeps a copy of the updated column vectors (about 80 KiB a
  row over our seven columns) in the buffer pool until the next checkpoint, and
  Kuzu's own checkpoint trigger watches only the WAL's size, which updates barely
  grow: ~850 updates filled a 64 MiB pool. The adapter checkpoints itself when
  the updates since the last checkpoint may pin a quarter of the pool (confirmed
  with ``CALL BM_INFO()``) or the WAL passes ``checkpoint_wal_bytes``, and on
  "buffer pool is full" it checkpoints and retries once.
* Size. One transaction can write about pool/8 bytes and fails at pool/4; prepare
  refuses an item over ``max_write_bytes`` (pool/16 unless given), and a batch
  over it is applied in several transactions with before-images (not atomic on
  its own, compensated on failure).
* Disk full. Kuzu does not survive ENOSPC: a commit whose WAL write failed stays
  visible in memory and is written (so replayed) when the engine closes; closing
  while the disk is still full aborts the process; a failed CHECKPOINT makes the
  next one write a corrupt file or corrupt the heap. So writes and checkpoints
  check the free space first (DiskFullError before Kuzu sees ENOSPC), automatic
  checkpoints are off, and if Kuzu fails anyway the engine is never checkpointed
  again: it is closed once there is room, the failed commit is cut off the WAL,
  and it is reopened from disk (the WAL holds every acknowledged commit).
* Damage. Kuzu has no page checksums: a zeroed block reads as other values,
  makes it allocate without bound or crash. Each row carries a crc32 of its
  fields, checked on every read (rows written before the column existed have
  NULL and are read as they are). A clean close writes a checksum of the
  database file beside it (``<path>.memsys-sum``); an open whose file does not
  match it (or that finds a WAL to replay) first opens and reads everything in a
  child process with address-space and CPU limits, so damage is a
  CorruptStoreError naming the file, never a dead or runaway process.

Kuzu's upstream repository was archived in 2025. Where its successor with the
same Python API (LadybugDB: ``real_ladybug`` or ``ladybug``) is installed
instead, the adapter uses it.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import signal
import subprocess
import sys
import warnings
import zlib
from collections.abc import Callable, Iterable, Sequence
from itertools import groupby
from typing import Any, ClassVar, TypeVar

from memsys.adapters._base import import_backend
from memsys.adapters._graph import GraphStoreBase
from memsys.domain.errors import (
    CorruptStoreError,
    DiskFullError,
    InvalidInputError,
    InvalidMemoryItemError,
    MemsysError,
    MissingBackend,
    ReadOnlyStoreError,
    StoreError,
    StoreLockedError,
    StoreUnavailableError,
)
from memsys.domain.model import MemoryItem, Relationship, from_epoch_us, to_epoch_us, trusted_item
from memsys.domain.operations import Delete, Operation, Put, Relate, Unrelate
from memsys.domain.query import MemoryQuery
from memsys.durable import atomic_write, os_error
from memsys.ports import Capability

log = logging.getLogger("memsys.adapters.kuzu")
T = TypeVar("T")

_FIELDS = "n.id, n.content, n.memory_type, n.metadata, n.created_at, n.updated_at, n.version, n.crc"
_EDGE_FIELDS = "a.id, b.id, e.rel_type, e.properties, e.crc"
_SET = ("n.content = r.content, n.memory_type = r.memory_type, n.metadata = r.metadata, "
        "n.created_at = r.created_at, n.updated_at = r.updated_at, n.version = r.version, n.crc = r.crc")
_QUERIES = {
    "get": f"MATCH (n:MemoryItem) WHERE n.id = $id RETURN {_FIELDS}",
    "create": ("CREATE (n:MemoryItem {id: $id, content: $content, memory_type: $memory_type, "
               "metadata: $metadata, created_at: $created_at, updated_at: $updated_at, version: $version, "
               "crc: $crc})"),
    "update": ("MATCH (n:MemoryItem) WHERE n.id = $id SET n.content = $content, n.memory_type = $memory_type, "
               "n.metadata = $metadata, n.created_at = $created_at, n.updated_at = $updated_at, "
               "n.version = $version, n.crc = $crc"),
    # UNWIND + MATCH by key uses the primary-key index; `WHERE id IN $ids` scans the table.
    "existing": "UNWIND $ids AS i MATCH (n:MemoryItem {id: i}) RETURN n.id",
}
_CREATE_MANY = ("UNWIND $rows AS r CREATE (n:MemoryItem {id: r.id, content: r.content, memory_type: r.memory_type, "
                "metadata: r.metadata, created_at: r.created_at, updated_at: r.updated_at, version: r.version, "
                "crc: r.crc})")
_BATCH = {
    Put: f"UNWIND $rows AS r MATCH (n:MemoryItem {{id: r.id}}) SET {_SET}",
    Delete: "UNWIND $rows AS i MATCH (n:MemoryItem {id: i}) DETACH DELETE n",
    Relate: ("UNWIND $rows AS r MATCH (a:MemoryItem {id: r.s}), (b:MemoryItem {id: r.t}) "
             "MERGE (a)-[e:RELATED {rel_type: r.type}]->(b) SET e.properties = r.p, e.crc = r.c"),
    Unrelate: ("UNWIND $rows AS r MATCH (a:MemoryItem {id: r.s})-[e:RELATED]->(b:MemoryItem {id: r.t}) "
               "WHERE e.rel_type = r.type DELETE e"),
}
_SCHEMA = (
    "CREATE NODE TABLE IF NOT EXISTS MemoryItem(id STRING PRIMARY KEY, content STRING, memory_type STRING, "
    "metadata STRING, created_at INT64, updated_at INT64, version INT64, crc INT64)",
    "CREATE REL TABLE IF NOT EXISTS RELATED(FROM MemoryItem TO MemoryItem, rel_type STRING, properties STRING, "
    "crc INT64)",
)
_INT64 = (-(1 << 63), (1 << 63) - 1)
_SUM_SUFFIX = ".memsys-sum"
_FLUSH_ROOM = 1 << 20  # free bytes that let Kuzu write the log bytes it holds after a failed write
_KUZU_MAGIC = b"KUZU"
_POOL_FULL = "buffer pool is full"
_NO_SPACE = ("No space left on device", "Disk quota exceeded", "File too large")
_CORRUPT = ("not a valid Kuzu database", "Unable to open database", "storage version", "checksum", "corrupted",
            "Corrupted", "WAL", "Reading past the end of the file", "doesn't exist in catalog")
#: Kuzu engines that could not be closed without aborting the process (a failed WAL write
#: still buffered while the disk is full), by path: kept alive until space returns.
_WEDGED: dict[str, tuple[Any, Any]] = {}


def _import_kuzu() -> Any:
    for module in ("kuzu", "real_ladybug", "ladybug"):
        try:
            candidate = import_backend(module, "kuzu")
        except MissingBackend:
            continue
        if hasattr(candidate, "Database") and hasattr(candidate, "Connection"):
            return candidate
    raise MissingBackend("kuzu", "kuzu")


def _item_crc(item_id: str, content: str, memory_type: str, metadata: str, created_at: int, updated_at: int,
              version: int) -> int:
    text = "\x1f".join((item_id, content, memory_type, metadata, str(created_at), str(updated_at), str(version)))
    return zlib.crc32(text.encode("utf-8", "surrogatepass"))


def _row_order(row: Sequence[Any]) -> tuple[int, str]:
    """(created_at, id) of an item row; a row whose fields are not even of the right type sorts
    first, so building it raises CorruptStoreError instead of the sort raising TypeError."""
    if type(row[4]) is not int or type(row[0]) is not str:
        return (-(1 << 63) - 1, "")
    return (row[4], row[0])


def _edge_crc(source_id: str, target_id: str, rel_type: str, properties: str) -> int:
    return zlib.crc32("\x1f".join((source_id, target_id, rel_type, properties)).encode("utf-8", "surrogatepass"))


def _file_crc(path: str) -> tuple[int, int]:
    """(size, crc32) of a file, read in 1 MiB blocks."""
    crc = size = 0
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            crc = zlib.crc32(block, crc)
            size += len(block)
    return size, crc


def _free_bytes(folder: str) -> int:
    st = os.statvfs(folder)
    return st.f_bavail * st.f_frsize


def _is_pool_full(exc: BaseException) -> bool:
    return _POOL_FULL in str(exc)


class KuzuMemoryAdapter(GraphStoreBase):
    """A Kuzu graph database at ``path`` (a file; Kuzu adds ``path.wal`` beside it).

    ``buffer_pool_size`` is Kuzu's memory budget (at least 16 MiB). ``max_write_bytes``
    bounds what one Kuzu transaction writes (default ``buffer_pool_size // WRITE_LIMIT_DIVISOR``):
    prepare refuses a larger item with InvalidMemoryItemError, and a larger batch is split.
    """
    atomic_apply = True  # one engine transaction / one atomic file write per batch

    backend = "kuzu"
    capabilities: ClassVar[frozenset[Capability]] = GraphStoreBase.capabilities | {
        Capability.PERSISTENCE, Capability.NATIVE_TRANSACTIONS}
    scratch_files = ("*.wal", "*.lock", "*.shadow")

    #: Default ``max_write_bytes`` is the pool divided by this. Measured: one transaction
    #: writes pool/8 and fails at pool/4 ("buffer pool is full"); /16 leaves room for the
    #: pages and update versions already in the pool.
    WRITE_LIMIT_DIVISOR: ClassVar[int] = 16
    #: Buffer-pool bytes one updated or deleted row may pin until the next checkpoint
    #: (measured ~80 KiB: Kuzu copies a 2048-row vector of each updated column).
    UPDATE_PIN_BYTES: ClassVar[int] = 128 << 10
    #: Checkpoint when the WAL grows past this (Kuzu's own default trigger, which is off).
    checkpoint_wal_bytes: ClassVar[int] = 16 << 20
    #: Free bytes a write or checkpoint must leave on the disk. Kuzu cannot survive ENOSPC
    #: (see the module notes), so memsys refuses the write with DiskFullError first.
    disk_reserve_bytes: ClassVar[int] = 1 << 20
    #: CPU seconds the open probe (a child process) gets, plus one per 20 MiB of file; past
    #: them Kuzu is looping on a damaged file. Wall time allowed: this many times as long.
    probe_cpu_seconds: ClassVar[int] = 60
    probe_wall_factor: ClassVar[int] = 5

    def __init__(self, path: str | os.PathLike[str], *, buffer_pool_size: int = 256 << 20,
                 max_write_bytes: int | None = None, name: str | None = None) -> None:
        if path is None:
            raise InvalidInputError("KuzuMemoryAdapter needs a path (a file)")
        super().__init__(path, name=name)
        if type(buffer_pool_size) is not int or buffer_pool_size < 16 << 20:
            raise InvalidInputError(f"{self.name}: buffer_pool_size must be an int of at least 16 MiB, "
                                    f"got {buffer_pool_size!r}")
        if max_write_bytes is None:
            max_write_bytes = buffer_pool_size // self.WRITE_LIMIT_DIVISOR
        if type(max_write_bytes) is not int or not 0 < max_write_bytes <= buffer_pool_size // 4:
            raise InvalidInputError(f"{self.name}: max_write_bytes must be an int in 1..buffer_pool_size/4 "
                                    f"({buffer_pool_size // 4}): Kuzu fails a transaction of pool/4; "
                                    f"got {max_write_bytes!r}")
        self.buffer_pool_size = buffer_pool_size
        self.max_write_bytes = max_write_bytes
        self._kuzu = _import_kuzu()
        self._abs = os.path.abspath(self.path)  # type: ignore[arg-type]
        self._folder = os.path.dirname(self._abs)
        self._db: Any = None
        self._con: Any = None
        self._prepared: dict[str, Any] = {}
        self._pinned = 0            # estimated buffer-pool bytes held by updates since the last checkpoint
        self._poisoned = False      # a CHECKPOINT failed: never checkpoint this engine again, reopen it
        self._wal_pending = False   # a WAL write failed: Kuzu holds bytes it must write before it closes
        self._wal_good = 0          # the WAL's size after the last commit that succeeded
        self._in_tx = False
        self._rows_cache: dict[int, tuple[MemoryItem, dict[str, Any]]] = {}  # prepare's rows, for apply
        #: How the open checked the files: "new", "checksum" (matched the sidecar) or "probe".
        self.open_check = "new"
        with self._opening():
            self._call("open", self._open)

    # --- opening, checking, closing

    def _open(self) -> None:
        os.makedirs(self._folder, exist_ok=True)
        wedged = _WEDGED.get(self._abs)
        if wedged is not None:  # an earlier adapter's engine still owes its WAL a write
            if not self._room_to_flush():
                raise DiskFullError(f"{self.name}: {self.path} is still held by an engine waiting for disk space "
                                    "to finish its log; free space and open again", store=self.name, path=self.path)
            _WEDGED.pop(self._abs)
            _close_engine(wedged[0], wedged[1], checkpoint=False)
            _cut_wal(self._abs, wedged[2])
        if os.path.isfile(self._abs) and os.path.getsize(self._abs) > 0:
            self._check_files()
        self._connect()

    def _check_files(self) -> None:
        """Make sure Kuzu can open the file without crashing, before this process opens it."""
        if self._kuzu.__name__ == "kuzu":
            with open(self._abs, "rb") as f:
                if f.read(len(_KUZU_MAGIC)) != _KUZU_MAGIC:
                    raise CorruptStoreError(f"{self.name}: {self.path} is not a Kuzu database (bad magic)",
                                            path=self.path)
        wal = self._abs + ".wal"
        replay = os.path.exists(wal) and os.path.getsize(wal) > 0
        if not replay and self._matches_sidecar():
            self.open_check = "checksum"
            return
        self.open_check = "probe"
        self._probe()

    def _matches_sidecar(self) -> bool:
        try:
            with open(self._abs + _SUM_SUFFIX, "rb") as f:
                meta = json.loads(f.read())
            if os.path.getsize(self._abs) != meta["size"]:
                return False
            return _file_crc(self._abs) == (meta["size"], meta["crc32"])
        except (OSError, ValueError, KeyError, TypeError):
            return False

    def _write_sidecar(self) -> None:
        """After a clean close: the checksum the next open verifies instead of probing."""
        try:
            size, crc = _file_crc(self._abs)
            atomic_write(self._abs + _SUM_SUFFIX, json.dumps({"size": size, "crc32": crc}).encode())
        except OSError:
            log.warning("%s: could not write %s; the next open will probe the file", self.name,
                        self._abs + _SUM_SUFFIX, exc_info=True)

    def _probe(self) -> None:
        """Open and read the whole database in a child process with an address-space limit."""
        size = os.path.getsize(self._abs)
        max_db = 1 << max(30, (2 * size).bit_length())  # Kuzu wants a power of two
        # Address space: Kuzu reserves max_db and the pool (and 256 MiB more) up front; a runaway
        # allocation on a damaged file fails at this limit instead of taking the machine's memory.
        limit = max_db + 2 * self.buffer_pool_size + (768 << 20) + 2 * size
        cpu = int(self.probe_cpu_seconds + size / (20 << 20))  # CPU time: a loaded machine is not a damaged file
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
        try:
            proc = subprocess.run(
                [sys.executable, "-c", "import sys; from memsys.adapters.kuzu_store import _probe_child; "
                 "sys.exit(_probe_child(sys.argv[1:]))", self._abs, str(self.buffer_pool_size), str(max_db),
                 str(limit), str(cpu)], capture_output=True, text=True, timeout=self.probe_wall_factor * cpu, env=env)
        except subprocess.TimeoutExpired as exc:
            raise StoreUnavailableError(f"{self.name}: the probe that checks {self.path} before opening it did not "
                                        f"finish in {self.probe_wall_factor * cpu}s (an overloaded machine, or a "
                                        "damaged file Kuzu waits on); retry", store=self.name) from exc
        except OSError as exc:
            raise StoreError(f"{self.name}: could not start the probe that checks {self.path}: {exc}",
                             store=self.name) from exc
        if proc.returncode == 0:
            return
        lines = (proc.stdout.strip() or proc.stderr.strip()).splitlines()
        said = lines[-1] if lines else f"exit status {proc.returncode}"
        if proc.returncode < 0:
            what = f"ran past {cpu}s of CPU" if -proc.returncode == signal.SIGXCPU else \
                f"crashed reading it (signal {-proc.returncode})"
            raise CorruptStoreError(f"{self.name}: {self.path} is damaged: Kuzu {what}, in a probe process",
                                    path=self.path)
        error = self._translate(RuntimeError(said), "open")
        if isinstance(error, (StoreLockedError, ReadOnlyStoreError, DiskFullError)) or "Permission denied" in said:
            raise error
        if proc.returncode == 3 or isinstance(error, CorruptStoreError) or "bad_alloc" in said \
                or "MemoryError" in said or "Buffer manager" in said or "Runtime exception" in said \
                or "IO exception" in said:
            raise CorruptStoreError(f"{self.name}: {self.path} is damaged: {said}", path=self.path)
        raise StoreError(f"{self.name}: the probe of {self.path} failed: {said}", store=self.name)

    def _connect(self) -> None:
        """Open the engine on the (checked) files and make sure the schema is current."""
        if not os.path.isfile(self._abs) or os.path.getsize(self._abs) == 0:
            self._check_space(1 << 16, "creating the database")  # Kuzu does not survive ENOSPC
        db = self._kuzu.Database(self._abs, buffer_pool_size=self.buffer_pool_size, max_db_size=1 << 38,
                                 auto_checkpoint=False)  # checkpoints are ours: see the module notes
        con = None
        try:
            con = self._kuzu.Connection(db)
            # Only write when something is missing: a DDL statement writes the WAL even when it
            # changes nothing, and on a full disk that write makes Kuzu abort when it is closed.
            if not {"MemoryItem", "RELATED"} <= _tables(con):
                self._check_space(1 << 16, "creating the tables")
                for statement in _SCHEMA:
                    con.execute(statement)
            for table in ("MemoryItem", "RELATED"):  # stores written before rows carried a crc
                if "crc" not in _columns(con, table):
                    self._check_space(1 << 16, "adding the checksum column")
                    con.execute(f"ALTER TABLE {table} ADD crc INT64")
            prepared = {name: _prepare(con, _QUERIES[name]) for name in ("get", "existing")}
        except BaseException:
            _close_engine(db, con, checkpoint=False)
            raise
        self._db, self._con, self._prepared = db, con, prepared
        self._pinned = 0
        self._poisoned = False
        self._wal_good = self._wal_size()

    def _engine(self, *, write: bool = False) -> Any:
        """The connection; reopens the engine after a failed checkpoint or WAL write, or a failed reopen."""
        if self._poisoned and self._con is not None:
            self._reopen()  # a full disk refuses this: the engine still shows a write that failed
        if self._con is None:
            self._connect()
        return self._con

    def _reopen(self) -> None:
        if self._wal_pending and not self._room_to_flush():
            # Kuzu failed to log a commit but shows it in memory; it must be closed (which writes the
            # failed record) and the record cut off before anything is read or written again.
            raise DiskFullError(f"{self.name}: the disk holding {self.path} is full; a write failed and the "
                                "store is unavailable until there is space again (nothing acknowledged is lost)",
                                store=self.name, path=self.path)
        db, con = self._db, self._con
        self._db = self._con = None
        self._prepared = {}
        _close_engine(db, con, checkpoint=False)  # the WAL holds every commit; the reopen replays it
        if self._wal_pending:
            _cut_wal(self._abs, self._wal_good)
            self._wal_pending = False
        self._connect()

    def _close(self) -> None:
        self._rows_cache.clear()
        db, con = self._db, self._con
        self._db = self._con = None
        if db is None:
            return
        if self._wal_pending and not self._room_to_flush():
            # Closing now would make Kuzu abort the process writing its buffered log. Keep the
            # engine for a later open of this path; the WAL on disk holds every commit.
            _WEDGED[self._abs] = (db, con, self._wal_good)
            raise OSError(errno.ENOSPC, "closed without flushing: Kuzu still holds log bytes it could not write; "
                          "nothing acknowledged is lost; free space, then open the store again", self._abs)
        self._db, self._con = db, con
        clean = False
        try:
            clean = not self._poisoned and self._checkpoint("close")
        finally:
            self._db = self._con = None
            _close_engine(db, con, checkpoint=False)  # after a checkpoint there is nothing left to write
        if self._wal_pending:  # drop the record of the write that failed, which closing just wrote
            _cut_wal(self._abs, self._wal_good)
        if clean and not os.path.exists(self._abs + ".wal"):
            self._write_sidecar()

    # --- checkpoints

    def _space_for(self, nbytes: int) -> bool:
        try:
            return _free_bytes(self._folder) >= nbytes + self.disk_reserve_bytes
        except OSError:
            return True  # cannot tell: let the engine try

    def _room_to_flush(self) -> bool:
        """Whether Kuzu can write the log bytes it holds after a failed write (closing it otherwise aborts)."""
        try:
            return _free_bytes(self._folder) >= _FLUSH_ROOM
        except OSError:
            return True

    def _check_space(self, nbytes: int, what: str) -> None:
        if not self._space_for(2 * nbytes):
            free = _free_bytes(self._folder)
            raise DiskFullError(f"{self.name}: {what} on {self.path} refused: the disk is full ({free} bytes free; "
                                f"this needs {2 * nbytes} plus a reserve of {self.disk_reserve_bytes}); nothing was "
                                "written; free space and retry", store=self.name, path=self.path)

    def _wal_size(self) -> int:
        try:
            return os.path.getsize(self._abs + ".wal")
        except OSError:
            return 0

    def _checkpoint(self, reason: str, *, required: bool = False) -> bool:
        """CHECKPOINT if the disk has room for it; True when it ran. ``required``: raise instead."""
        wal = self._wal_size()
        if not self._space_for(4 * wal + (2 << 20)):
            if required:
                self._check_space(2 * wal + (1 << 20), f"checkpoint ({reason})")
            return False
        con = self._engine(write=True)
        try:
            con.execute("CHECKPOINT")
        except Exception as exc:
            # Kuzu's state after a failed checkpoint writes a corrupt file at the next one: never
            # checkpoint this engine again; the next call reopens it from disk.
            self._poisoned = True
            try:
                con.execute("CALL force_checkpoint_on_close=false")
            except Exception:
                pass
            if required:
                raise
            log.warning("%s: checkpoint (%s) of %s failed; the WAL keeps every commit and the engine will be "
                        "reopened: %s", self.name, reason, self.path, exc)
            return False
        self._pinned = 0
        return True

    def _after_write(self, pinned_rows: int) -> None:
        """Checkpoint when the updates since the last one may pin too much of the pool, or the WAL is large."""
        self._pinned += pinned_rows * self.UPDATE_PIN_BYTES
        if self._pinned >= self.buffer_pool_size // 4:
            usage = self._pool_usage()
            if usage is not None and usage < self.buffer_pool_size // 2:
                self._pinned = 0  # the estimate counts a vector per row; the pool says otherwise
                return
            self._checkpoint("updates pin the buffer pool")
        elif self._wal_size() > self.checkpoint_wal_bytes:
            self._checkpoint("the WAL is large")

    def _pool_usage(self) -> int | None:
        try:
            return int(self._rows("CALL BM_INFO() RETURN mem_usage")[0][0])
        except Exception:
            return None  # an engine without BM_INFO: checkpoint on the estimate alone

    def _retrying(self, fn: Callable[[], T]) -> T:
        """Run ``fn``; when Kuzu's buffer pool is full, checkpoint (frees update versions) and retry once."""
        try:
            return fn()
        except RuntimeError as exc:
            if not _is_pool_full(exc) or self._in_tx:
                raise
        self._checkpoint("the buffer pool is full", required=True)
        try:
            return fn()
        except RuntimeError as exc:
            if not _is_pool_full(exc):
                raise
            raise StoreError(f"{self.name}: a call on {self.path} needs more memory than Kuzu's buffer pool "
                             f"({self.buffer_pool_size} bytes) holds, even after a checkpoint; open the store with "
                             "a larger buffer_pool_size or write less at once", store=self.name) from exc

    # --- errors

    def _translate(self, exc: Exception, operation: str) -> MemsysError:
        if isinstance(exc, MemsysError):
            return exc
        if isinstance(exc, OSError):
            return os_error(exc, f"{self.name}: {operation} on {self.path}", path=self.path, store=self.name)
        text = str(exc)
        message = f"{self.name}: {operation} on {self.path} failed: {text}"
        if any(m in text for m in _NO_SPACE):
            return DiskFullError(f"{self.name}: {operation} on {self.path} failed: the disk is full: {text}; "
                                 "nothing of it was applied; free space and retry", store=self.name, path=self.path)
        if "Read-only file system" in text:
            return ReadOnlyStoreError(message, store=self.name, path=self.path)
        if "Permission denied" in text:
            return StoreError(message, store=self.name)
        if "Cannot write to file" in text and not self._room_to_flush():
            return DiskFullError(f"{self.name}: {operation} on {self.path} failed: the disk is full: {text}; nothing "
                                 "of it was applied; free space and retry", store=self.name, path=self.path)
        if "Could not set lock" in text or "lock on file" in text:
            return StoreLockedError(f"{self.name}: {self.path} is open in another process (Kuzu's own file lock): "
                                    f"{text}", store=self.name, path=self.path, holder="another process (Kuzu lock)")
        if isinstance(exc, UnicodeError) or any(m in text for m in _CORRUPT):
            return CorruptStoreError(f"{self.name}: {self.path} is not a readable Kuzu database: {text}",
                                     path=self.path)
        if "Only one write transaction" in text:
            return StoreUnavailableError(message, store=self.name)
        return StoreError(message, store=self.name)

    def _damaged(self, what: str) -> CorruptStoreError:
        return CorruptStoreError(f"{self.name}: {what} in {self.path} fails its checksum: the stored value is "
                                 "damaged", path=self.path)

    # --- helpers

    def _rows(self, query: Any, params: dict[str, Any] | None = None) -> list[list[Any]]:
        con = self._engine()

        def run() -> list[list[Any]]:
            result = con.execute(query, params or {})
            rows = []
            while result.has_next():
                rows.append(result.get_next())
            return rows

        return self._retrying(run)

    @staticmethod
    def _params(item: MemoryItem) -> dict[str, Any]:
        content = json.dumps(item.content, ensure_ascii=False)
        metadata = json.dumps(item.metadata, ensure_ascii=False)
        created, updated = to_epoch_us(item.created_at), to_epoch_us(item.updated_at)
        kind = item.memory_type.value
        return {"id": item.id, "content": content, "memory_type": kind, "metadata": metadata,
                "created_at": created, "updated_at": updated, "version": item.version,
                "crc": _item_crc(item.id, content, kind, metadata, created, updated, item.version)}

    def _item(self, row: Sequence[Any]) -> MemoryItem:
        try:
            if row[7] is not None and row[7] != _item_crc(*row[:7]):
                raise self._damaged(f"item {row[0]!r}")
            return trusted_item(row[0], json.loads(row[1]), row[2], json.loads(row[3]), from_epoch_us(row[4]),
                                from_epoch_us(row[5]), row[6])
        except CorruptStoreError:
            raise
        except Exception as exc:  # a row without a checksum that no longer decodes
            raise CorruptStoreError(f"{self.name}: item {row[0]!r} in {self.path} is unreadable: "
                                    f"{type(exc).__name__}: {exc}", path=self.path) from exc

    def _relationship(self, row: Sequence[Any]) -> Relationship:
        try:
            if row[4] is not None and row[4] != _edge_crc(row[0], row[1], row[2], row[3] or ""):
                raise self._damaged(f"relationship {tuple(row[:3])!r}")
            return Relationship(row[0], row[1], row[2], json.loads(row[3]) if row[3] else {})
        except CorruptStoreError:
            raise
        except Exception as exc:
            raise CorruptStoreError(f"{self.name}: relationship {tuple(row[:3])!r} in {self.path} is unreadable: "
                                    f"{type(exc).__name__}: {exc}", path=self.path) from exc

    # --- items

    def _get(self, item_id: str) -> MemoryItem | None:
        rows = self._rows(self._prepared_query("get"), {"id": item_id})
        return self._item(rows[0]) if rows else None

    def _prepared_query(self, name: str) -> Any:
        self._engine()
        return self._prepared[name]

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
        if query.limit is None:
            return query.select(self._item(row) for row in self._rows(f"{cypher} RETURN {_FIELDS}", params))
        if not query.metadata and query.content is None:
            # Every condition is in the WHERE clause: the engine orders and limits (a YCSB scan
            # reads its N rows, not the table); ``select`` below still re-checks and re-orders.
            params["limit"] = query.limit
            rows = self._rows(f"{cypher} RETURN {_FIELDS} ORDER BY n.created_at, n.id LIMIT $limit", params)
            return query.select(self._item(row) for row in rows)
        # Conditions checked only on items: order the rows by (created_at, id) as ``select``
        # does and build items in that order until ``limit`` of them match.
        rows = sorted(self._rows(f"{cypher} RETURN {_FIELDS}", params), key=_row_order)
        hits: list[MemoryItem] = []
        for row in rows:
            if len(hits) >= query.limit:
                break
            item = self._item(row)  # checksum verified: row[4] and row[0] were what they claim
            if query.matches(item):
                hits.append(item)
        return hits

    # --- writes

    def _prepare_op(self, op: Operation) -> Operation:
        """Refuse what Kuzu cannot apply: an item larger than one transaction may write, integers
        outside INT64 (the schema's type)."""
        if isinstance(op, Put):
            item = op.item
            if not _INT64[0] <= item.version <= _INT64[1]:
                raise InvalidMemoryItemError(f"{self.name}: item {item.id!r} has version {item.version}, outside "
                                             "Kuzu's INT64 column")
            row = self._params(item)
            size = _row_bytes(row)  # what _apply will measure
            if size > self.max_write_bytes:
                raise InvalidMemoryItemError(
                    f"{self.name}: item {item.id!r} is too large for kuzu: {size} bytes, limit {self.max_write_bytes}"
                    f" (max_write_bytes; buffer pool {self.buffer_pool_size} bytes)")
            if len(self._rows_cache) > 50_000:  # prepared but never applied (an aborted transaction)
                self._rows_cache.clear()
            self._rows_cache[id(item)] = (item, row)  # items are immutable: apply writes this row
        elif isinstance(op, Relate):
            size = _row_bytes(_encode(op))
            if size > self.max_write_bytes:
                raise InvalidInputError(f"{self.name}: relationship {op.relationship.key!r} is too large for kuzu: "
                                        f"{size} bytes, limit {self.max_write_bytes} (max_write_bytes)")
        return op

    def _encoded(self, op: Operation) -> Any:
        if isinstance(op, Put):
            cached = self._rows_cache.pop(id(op.item), None)
            if cached is not None and cached[0] is op.item:
                return cached[1]
        return _encode(op)

    def _apply(self, ops: Sequence[Operation], durable: bool) -> None:
        if not ops:
            return
        self._engine(write=True)
        encoded = [(op, row, _row_bytes(row)) for op in ops for row in [self._encoded(op)]]
        chunks = list(_chunks(encoded, self.max_write_bytes))
        if len(chunks) == 1:
            self._apply_one(chunks[0])
            return
        # Larger than one Kuzu transaction holds: several, with before-images to undo the applied
        # part if a later one fails (all or nothing, though not atomic against a crash).
        undo = self._before_images(ops)
        try:
            for chunk in chunks:
                self._apply_one(chunk)
        except BaseException:
            self._compensate(undo)
            raise

    def _apply_one(self, chunk: list[tuple[Operation, Any, int]]) -> None:
        self._check_space(sum(size for _, _, size in chunk) + 4096, "write")
        pinned = self._retrying(lambda: self._apply_chunk([(op, row) for op, row, _ in chunk]))
        try:
            self._after_write(pinned)
        except Exception:  # the write is committed; a checkpoint that cannot run now runs later
            log.warning("%s: checkpoint after a write failed", self.name, exc_info=True)

    def _execute_write(self, query: Any, params: dict[str, Any], *, commits: bool = True) -> None:
        """Run a statement that writes; ``commits``: it ends a transaction (auto-commit or COMMIT)."""
        try:
            self._con.execute(query, params)
        except RuntimeError as exc:
            if any(m in str(exc) for m in _NO_SPACE) or "Cannot write to file" in str(exc):
                # Kuzu now holds log bytes it must write before it can close, and checkpointing it
                # corrupts its heap: reopen it (replaying the WAL) once the disk has room.
                self._wal_pending = self._poisoned = True
                try:
                    self._con.execute("CALL force_checkpoint_on_close=false")
                except Exception:
                    pass
            raise
        if commits:
            self._wal_good = self._wal_size()  # the log ends with this commit

    def _apply_chunk(self, ops: list[tuple[Operation, Any]]) -> int:
        """Apply encoded ``ops`` in one Kuzu transaction; returns how many existing rows it updated or deleted."""
        if len(ops) == 1 and isinstance(ops[0][0], Put):
            params = ops[0][1]
            try:
                self._execute_write(self._write_statement("create"), params)
                return 0
            except RuntimeError as exc:
                if "duplicated primary key" not in str(exc):
                    raise
            self._execute_write(self._write_statement("update"), params)
            return 1
        if all(isinstance(op, Put) for op, _ in ops):
            # One statement (atomic on its own) when the ids are all new or all present.
            rows = _batch_rows(Put, ops)
            existing = self._existing([r["id"] for r in rows])
            if not existing:
                self._execute_write(_CREATE_MANY, {"rows": rows})
                return 0
            if len(existing) == len(rows):
                self._execute_write(_BATCH[Put], {"rows": rows})
                return len(rows)
        pinned = 0
        self._con.execute("BEGIN TRANSACTION")
        self._in_tx = True
        try:
            for kind, run in groupby(ops, key=lambda pair: type(pair[0])):
                rows = _batch_rows(kind, list(run))
                if kind is Put:  # CREATE is twice as fast as MERGE: create the new ids, update the rest
                    existing = self._existing([r["id"] for r in rows])
                    created = [r for r in rows if r["id"] not in existing]
                    if created:
                        self._execute_write(_CREATE_MANY, {"rows": created}, commits=False)
                    rows = [r for r in rows if r["id"] in existing]
                    if not rows:
                        continue
                self._execute_write(_BATCH[kind], {"rows": rows}, commits=False)
                pinned += len(rows)
            self._execute_write("COMMIT", {})
        except BaseException:
            try:
                self._con.execute("ROLLBACK")
            except Exception:
                pass  # Kuzu already rolled back after the failed statement ("No active transaction")
            raise  # the original error, never the rollback's
        finally:
            self._in_tx = False
        return pinned

    def _write_statement(self, name: str) -> Any:
        """A prepared write statement, prepared at first use: preparing one opens a write transaction
        whose log bytes, on a full disk, would make Kuzu abort when it is closed."""
        statement = self._prepared.get(name)
        if statement is None:
            statement = self._prepared[name] = _prepare(self._con, _QUERIES[name])
        return statement

    def _existing(self, ids: list[str]) -> set[str]:
        return {row[0] for row in self._rows(self._prepared["existing"], {"ids": ids})}

    # --- graph

    def _get_edge(self, source_id: str, target_id: str, rel_type: str) -> Relationship | None:
        rows = self._rows("MATCH (a:MemoryItem {id: $s})-[e:RELATED]->(b:MemoryItem {id: $t}) "
                          f"WHERE e.rel_type = $type RETURN {_EDGE_FIELDS}",
                          {"s": source_id, "t": target_id, "type": rel_type})
        return self._relationship(rows[0]) if rows else None

    def _edges(self, item_id: str, direction: str, rel_type: str | None) -> list[Relationship]:
        type_filter = " AND e.rel_type = $type" if rel_type is not None else ""
        params: dict[str, Any] = {"id": item_id, **({"type": rel_type} if rel_type is not None else {})}
        rows: list[list[Any]] = []
        if direction in ("out", "both"):
            rows += self._rows("MATCH (a:MemoryItem)-[e:RELATED]->(b:MemoryItem) WHERE a.id = $id"
                               f"{type_filter} RETURN {_EDGE_FIELDS}", params)
        if direction in ("in", "both"):
            loops = " AND a.id <> b.id" if direction == "both" else ""
            rows += self._rows("MATCH (a:MemoryItem)-[e:RELATED]->(b:MemoryItem) WHERE b.id = $id"
                               f"{type_filter}{loops} RETURN {_EDGE_FIELDS}", params)
        return [self._relationship(row) for row in rows]

    def _scan_relationships(self) -> Iterable[Relationship]:
        return [self._relationship(row) for row in self._rows(
            f"MATCH (a:MemoryItem)-[e:RELATED]->(b:MemoryItem) RETURN {_EDGE_FIELDS}")]


def _prepare(con: Any, query: str) -> Any:
    with warnings.catch_warnings():
        # Kuzu deprecates prepare(); a prepared statement still halves the cost of a lookup.
        warnings.simplefilter("ignore", DeprecationWarning)
        return con.prepare(query)


def _tables(con: Any) -> set[str]:
    result = con.execute("CALL SHOW_TABLES() RETURN name")
    names = set()
    while result.has_next():
        names.add(result.get_next()[0])
    return names


def _columns(con: Any, table: str) -> set[str]:
    result = con.execute(f"CALL TABLE_INFO('{table}') RETURN name")
    names = set()
    while result.has_next():
        names.add(result.get_next()[0])
    return names


def _close_engine(db: Any, con: Any, *, checkpoint: bool = True) -> None:
    """Close a Kuzu database; without ``checkpoint`` it leaves the WAL for the next open to replay."""
    if con is not None:
        if not checkpoint:
            try:
                con.execute("CALL force_checkpoint_on_close=false")
            except Exception:
                pass
        con.close()
    if db is not None:
        db.close()


def _cut_wal(path: str, good: int) -> None:
    """Truncate ``path``'s WAL to ``good`` bytes: what follows is a commit that failed (Kuzu writes
    it when it is closed, and would replay it at the next open)."""
    wal = path + ".wal"
    try:
        if os.path.getsize(wal) > good:
            with open(wal, "r+b") as f:
                f.truncate(good)
                os.fsync(f.fileno())
    except FileNotFoundError:
        pass


def _encode(op: Operation) -> Any:
    """The row (or id) an operation's statement takes."""
    if isinstance(op, Put):
        return KuzuMemoryAdapter._params(op.item)
    if isinstance(op, Delete):
        return op.item_id
    if isinstance(op, Relate):
        r = op.relationship
        p = json.dumps(r.properties, ensure_ascii=False)
        return {"s": r.source_id, "t": r.target_id, "type": r.rel_type, "p": p,
                "c": _edge_crc(r.source_id, r.target_id, r.rel_type, p)}
    return {"s": op.source_id, "t": op.target_id, "type": op.rel_type}  # type: ignore[union-attr]


def _row_bytes(row: Any) -> int:
    """About what a row makes Kuzu write: its long strings, plus a fixed part."""
    if isinstance(row, str):
        return 64 + len(row)
    if "content" in row:
        return 128 + len(row["id"]) + len(row["content"].encode("utf-8", "surrogatepass")) + \
            len(row["metadata"].encode("utf-8", "surrogatepass"))
    return 128 + len(row.get("p", "").encode("utf-8", "surrogatepass"))


def _chunks(encoded: list[tuple[Operation, Any, int]], limit: int) -> Iterable[list[tuple[Operation, Any, int]]]:
    """Encoded ops in order, in runs of at most ``limit`` bytes (an op larger than that goes alone)."""
    chunk: list[tuple[Operation, Any, int]] = []
    size = 0
    for entry in encoded:
        if chunk and size + entry[2] > limit:
            yield chunk
            chunk, size = [], 0
        chunk.append(entry)
        size += entry[2]
    if chunk:
        yield chunk


def _batch_rows(kind: type, ops: list[tuple[Operation, Any]]) -> list[Any]:
    """The rows of a run of one kind, without repeats: the last write of an id or edge wins."""
    if kind is Put:
        return list({row["id"]: row for _, row in ops}.values())
    if kind is Delete:
        return list(dict.fromkeys(row for _, row in ops))
    if kind is Relate:
        return list({(row["s"], row["t"], row["type"]): row for _, row in ops}.values())
    return [row for _, row in ops]


def _probe_child(argv: list[str]) -> int:
    """In a child process: open ``path`` read-only and read every row, under an address-space limit.

    Exit 0: readable; 3: a row fails its checksum or does not decode; anything else (an
    exception, a signal, the parent's timeout) means Kuzu cannot read the file safely.
    """
    import resource

    path, pool, max_db, limit, cpu = argv[0], int(argv[1]), int(argv[2]), int(argv[3]), int(argv[4])
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))  # a runaway allocation fails here, not in the host
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 5))  # SIGXCPU ends a loop
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    try:
        kuzu = _import_kuzu()
        db = kuzu.Database(path, buffer_pool_size=pool, max_db_size=max_db, read_only=True, max_num_threads=1)
        con = kuzu.Connection(db)

        def stream(query: str, params: dict[str, Any] | None = None) -> Iterable[list[Any]]:
            result = con.execute(query, params or {})
            while result.has_next():
                yield result.get_next()

        def index_finds(batch: list[str]) -> bool:  # every id found again through the primary-key index
            found = [r[0] for r in stream("UNWIND $ids AS i MATCH (n:MemoryItem {id: i}) RETURN n.id", {"ids": batch})]
            return sorted(found) == sorted(batch)

        tables = _tables(con)
        if "MemoryItem" not in tables:
            print("ok")
            return 0
        fields = _FIELDS if "crc" in _columns(con, "MemoryItem") else _FIELDS.replace(", n.crc", ", NULL")
        batch: list[str] = []
        for row in stream(f"MATCH (n:MemoryItem) RETURN {fields}"):  # streamed: memory stays flat
            if row[7] is not None and row[7] != _item_crc(*row[:7]):
                print(f"item {row[0]!r} fails its checksum")
                return 3
            json.loads(row[1]), json.loads(row[3])
            batch.append(row[0])
            if len(batch) == 5000:
                if not index_finds(batch):
                    print("the primary-key index does not match the rows")
                    return 3
                batch = []
        if batch and not index_finds(batch):
            print("the primary-key index does not match the rows")
            return 3
        if "RELATED" in tables:
            edge_fields = _EDGE_FIELDS if "crc" in _columns(con, "RELATED") else _EDGE_FIELDS.replace(", e.crc",
                                                                                                      ", NULL")
            for row in stream(f"MATCH (a:MemoryItem)-[e:RELATED]->(b:MemoryItem) RETURN {edge_fields}"):
                if row[4] is not None and row[4] != _edge_crc(row[0], row[1], row[2], row[3] or ""):
                    print(f"relationship {tuple(row[:3])!r} fails its checksum")
                    return 3
                if row[3]:
                    json.loads(row[3])
    except (ValueError, UnicodeError) as exc:
        print(f"a row does not decode: {type(exc).__name__}: {exc}")
        return 3
    except BaseException as exc:  # noqa: BLE001 - report whatever Kuzu raised to the parent
        print(f"{type(exc).__name__}: {exc}".replace("\n", " "))
        return 4
    print("ok")
    return 0
