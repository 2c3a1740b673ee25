"""LMDB: items as checksummed JSON values keyed by id, in native write transactions.

* One write transaction per apply, never nested: the adapter holds its lock
  around every engine call, and adapter-level transactions are buffered, so a
  thread never opens a second write transaction (DevSynth's LMDB adapter
  deadlocked exactly that way).
* Shared between processes, as LMDB is (``exclusive_path = False``): when
  another process grew the map, a transaction start fails with
  MDB_MAP_RESIZED and the adapter adopts the new size (``set_mapsize(0)``) and
  begins again; when the map is full, it grows (doubling) and retries. Both
  happen under the store lock, with no other transaction open on the
  environment. Inside one process LMDB cannot be opened twice (its locks are
  per process), so a second adapter on the same path gets StoreLockedError
  naming the first.
* Damaged files are refused before LMDB maps them (a truncated ``data.mdb``
  would otherwise kill the process with SIGBUS): ``validate_data_file`` reads
  the two meta pages as mdb.c defines them and checks that the file holds every
  page the newest one commits. ``memsys-lmdb.json`` beside it records that the
  environment was created, so an emptied or deleted ``data.mdb`` is damage, not
  a new store. When no other process has the environment open, every page is
  walked first (python-lmdb's offline verifier, ``verify=True``): LMDB aborts
  the process on a damaged page (a zeroed branch page fails an assertion). The
  lock file is allocated on disk before LMDB maps it: on a full disk a write
  into a sparse page of a mapped file is a SIGBUS, not an error.
* Every value carries a format byte and a CRC32 of what follows it, checked on
  every read (a search checks every value it scans): a flipped bit is a
  CorruptStoreError naming the id, never a wrong value. The created/updated
  times and the type are kept in a small header before the JSON, so a search
  parses only the values they admit. Values of older formats (CRC of the JSON
  only; plain JSON) still load.
* Limit: the map is read through mmap, so truncating ``data.mdb`` while a
  process has it open can still SIGBUS that process on a read (no engine on
  mmap survives that; writes check the file size first). Don't truncate the
  files of a live store; damage at rest is detected at open.
* ``sync=True`` (default): every write is on disk when the call returns.
  ``sync=False``: writes survive a process crash at once and a power loss after
  ``flush()``; a coordinator log makes that safe, and it is ~40x faster.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import struct
import sys
import threading
import time
import zlib
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar

from memsys.adapters._base import BaseMemoryStore, import_backend
from memsys.domain.errors import (
    CorruptStoreError,
    DiskFullError,
    MemsysError,
    ReadOnlyStoreError,
    StoreError,
    StoreLockedError,
    StoreUnavailableError,
)
from memsys.domain.model import MemoryItem, decode_item, to_epoch_us
from memsys.domain.operations import Delete, Operation, Put
from memsys.domain.query import MemoryQuery
from memsys.durable import atomic_write, os_error
from memsys.ports import Capability

_MAX_GROWTHS = 40
_DISK_FULL = ("No space left on device", "Disk quota exceeded", "File too large")
_MAX_RESIZES = 8
_json_decode = json.JSONDecoder().decode

# Value format 2 (written now): a version byte, the CRC32 (little endian) of everything after it,
# then the fields a search filters and orders on: created_at and updated_at (int64 microseconds
# since the epoch), the memory type's value (one length byte, ASCII), then the item's JSON. A
# search checks every value's CRC (cheap) but parses JSON only for values those fields admit:
# parsing JSON was ~90 % of a search's time. Format 1: version byte, CRC32 of the JSON, the JSON.
# A value that lands under another key is caught by comparing the decoded id with the key.
# Format 0 (no header) is a bare JSON object: its first byte is "{", which format bytes never are.
_VALUE_V1 = 1
_VALUE_V2 = 2
_HEADER = struct.Struct("<BI")
_HEADER_SIZE = _HEADER.size
_FIELDS_V2 = struct.Struct("<qqB")  # created_at_us, updated_at_us, length of the type's value
_FIELDS_END = _HEADER_SIZE + _FIELDS_V2.size
_LEGACY_FIRST_BYTE = ord("{")

DATA_FILE = "data.mdb"
LOCK_FILE = "lock.mdb"
MARKER_FILE = "memsys-lmdb.json"
# The lock file holds LMDB's reader table. LMDB sizes it (8 KiB + 64 bytes per reader on x86-64)
# only when it is smaller; a larger file just means more reader slots.
_LOCK_FILE_BYTES = 32 << 10

# Environments open in this process, by real path: LMDB must not be opened twice in one process.
_open_here: dict[str, str] = {}
_open_here_lock = threading.Lock()


# --------------------------------------------------------------------------- meta pages (mdb.c)

_MDB_MAGIC = 0xBEEFC0DE
_P_META = 0x08
_P_INVALID = (1 << 64) - 1
_CURSOR_STACK = 32
_E = "<" if sys.byteorder == "little" else ">"  # LMDB writes host byte order
_U16, _U32, _U64 = struct.Struct(_E + "H"), struct.Struct(_E + "I"), struct.Struct(_E + "Q")
# Page header size -> MDB_DATA_VERSION: LMDB 0.9 (16-byte page header, data version 1) and
# LMDB 1.0 (24-byte header, data version 3), as python-lmdb may bind either.
_ENGINES = {16: 1, 24: 3}
_MDB_DB_SIZE = 48  # MDB_db: md_pad (= psize in the free DB), flags, depth, 3 page counts, entries, root
_MDB_META_SIZE = 136  # magic, version, address, mapsize, 2 x MDB_db, last_pg, txnid


class _Meta:
    """One MDB_meta, parsed from the meta page that starts at ``base`` in ``buf``."""

    def __init__(self, buf: bytes, base: int, hdrsz: int) -> None:
        self.pgno = _U64.unpack_from(buf, base)[0]
        self.flags = _U16.unpack_from(buf, base + hdrsz - 6)[0]  # mp_flags ends the page header
        m = base + hdrsz
        self.magic, self.version = _U32.unpack_from(buf, m)[0], _U32.unpack_from(buf, m + 4)[0]
        self.mapsize = _U64.unpack_from(buf, m + 16)[0]
        self.psize = _U32.unpack_from(buf, m + 24)[0]  # mm_psize aliases the free DB's md_pad
        self.dbs = []
        for i in range(2):  # FREE_DBI, MAIN_DBI
            off = m + 24 + i * _MDB_DB_SIZE
            self.dbs.append((_U16.unpack_from(buf, off + 6)[0], _U64.unpack_from(buf, off + 40)[0]))  # depth, root
        self.last_pg = _U64.unpack_from(buf, m + 24 + 2 * _MDB_DB_SIZE)[0]
        self.txnid = _U64.unpack_from(buf, m + 24 + 2 * _MDB_DB_SIZE + 8)[0]


def _meta_problem(data_path: str) -> str | None:
    """What is wrong with the meta pages of ``data_path``, or None if LMDB can safely map it."""
    with open(data_path, "rb") as f:
        head = f.read(64)
        hdrsz = next((off for off in _ENGINES if len(head) >= off + 4 and _U32.unpack_from(head, off)[0] == _MDB_MAGIC),
                     None)
        if hdrsz is None:
            return "meta page 0 has no LMDB magic (zeroed, overwritten or truncated)"
        psize = _U32.unpack_from(head, hdrsz + 24)[0]
        if psize & (psize - 1) or not 512 <= psize <= 65536:
            return f"meta page 0 records an impossible page size {psize}"
        f.seek(0)
        buf = f.read(psize + hdrsz + _MDB_META_SIZE)
        # Size after the metas: a writer extends the file before it writes the meta that commits it.
        size = os.fstat(f.fileno()).st_size
    if len(buf) < psize + hdrsz + _MDB_META_SIZE:
        return f"the file ends ({size} bytes) inside meta page 1"
    metas = [_Meta(buf, 0, hdrsz), _Meta(buf, psize, hdrsz)]
    for slot, meta in enumerate(metas):
        if meta.magic != _MDB_MAGIC:
            return f"meta page {slot} has no LMDB magic"
        if meta.version != _ENGINES[hdrsz]:
            return f"meta page {slot} has data version {meta.version}, not {_ENGINES[hdrsz]}"
        if not meta.flags & _P_META or meta.pgno != slot:
            return f"page {slot} is not marked as meta page {slot}"
        if meta.psize != psize:
            return f"meta pages disagree on the page size ({psize} vs {meta.psize})"
        if meta.mapsize >= 1 << 48:  # beyond any address space: LMDB would adopt it on a resize
            return f"meta page {slot} records an impossible map size {meta.mapsize}"
    # Commit N writes slot N & 1 with txnid N (mdb_env_write_meta), so the slots hold two
    # consecutive txnids, slot 0 the even one (both 0 before the first commit). A flipped bit
    # in a txnid would otherwise make LMDB pick the older meta and silently drop a commit.
    t0, t1 = metas[0].txnid, metas[1].txnid
    if t0 & 1 or (t1 and not t1 & 1) or (abs(t0 - t1) != 1 and not t0 == t1 == 0):
        return f"the meta pages' transaction ids {t0} and {t1} are not two consecutive commits"
    newest = metas[1] if t1 > t0 else metas[0]
    if newest.last_pg < 1 or newest.last_pg >= (1 << 48):
        return f"the newest meta page records last page {newest.last_pg}"
    needed = (newest.last_pg + 1) * psize
    if size < needed:
        return (f"the file has {size} bytes but its newest commit (txn {newest.txnid}) uses pages up to "
                f"{newest.last_pg}, {needed} bytes: it was truncated")
    for name, (depth, root) in zip(("free", "main"), newest.dbs):
        if root != _P_INVALID and not 2 <= root <= newest.last_pg or depth > _CURSOR_STACK:
            return f"the newest meta page records an impossible {name} tree (root page {root}, depth {depth})"
    return None


def validate_data_file(folder: str) -> bool:
    """Check an LMDB environment's files before LMDB maps them; raise CorruptStoreError naming the
    file if they are damaged. Returns False when there is no environment yet (LMDB will create one).

    LMDB trusts its meta pages: a file shorter than the newest commit says is read through the
    map past its end (SIGBUS), and a damaged meta page picks the wrong tree. Only the metas are
    read here, so the check costs the same at any store size.
    """
    data_path = os.path.join(folder, DATA_FILE)
    created = os.path.exists(os.path.join(folder, MARKER_FILE))
    try:
        size = os.path.getsize(data_path)
    except FileNotFoundError:
        if created:
            raise CorruptStoreError(f"{data_path} is missing, but {folder} held an LMDB environment "
                                    f"({MARKER_FILE}); restore the file or remove the folder",
                                    path=data_path) from None
        return False
    if size == 0:
        if created:
            raise CorruptStoreError(f"{data_path} is empty (truncated), but {folder} held an LMDB environment "
                                    f"({MARKER_FILE})", path=data_path)
        return False  # created by an open that failed before LMDB wrote anything: still new
    problem = None
    for attempt in range(4):
        # Another process may commit while the metas are read; a real defect stays put.
        problem = _meta_problem(data_path)
        if problem is None:
            return True
        time.sleep(0.01 * (attempt + 1))
    raise CorruptStoreError(f"{data_path} is not a sound LMDB environment: {problem}", path=data_path)


def _first(candidate: tuple[Any, ...]) -> Any:
    return candidate[0]


def _order(item: MemoryItem) -> tuple[int, str]:
    return (to_epoch_us(item.created_at), item.id)  # type: ignore[arg-type]  # the order of sort_key


# --------------------------------------------------------------------------- the adapter


class LMDBMemoryAdapter(BaseMemoryStore):
    atomic_apply = True  # one engine transaction / one atomic file write per batch
    backend = "lmdb"
    capabilities: ClassVar[frozenset[Capability]] = BaseMemoryStore.capabilities | {
        Capability.PERSISTENCE, Capability.NATIVE_TRANSACTIONS}
    scratch_files = (LOCK_FILE,)
    exclusive_path = False  # LMDB is built to be shared by processes; map resizes are handled

    def __init__(self, path: str | os.PathLike[str], *, map_size: int = 64 << 20, sync: bool = True,
                 verify: bool = True, name: str | None = None) -> None:
        super().__init__(path, name=name)
        self._lmdb = import_backend("lmdb", "lmdb")
        self.sync = sync
        self._env: Any = None
        self._key = os.path.realpath(self.path)  # type: ignore[arg-type]
        self._data_path = os.path.join(self.path, DATA_FILE)  # type: ignore[arg-type]

        def open_env() -> None:
            os.makedirs(self.path, exist_ok=True)  # type: ignore[arg-type]
            self._claim_in_process()
            try:
                if validate_data_file(self.path) and verify:  # type: ignore[arg-type]
                    self._verify_at_rest()
                self._reserve_lock_file()
                self._env = self._lmdb.open(self.path, map_size=map_size, max_dbs=2, subdir=True, sync=sync,
                                            metasync=sync, readahead=False, max_readers=256)
                self._db = self._begin_retrying(lambda: self._env.open_db(b"items"))
                self._psize = self._env.stat()["psize"]
            except BaseException:
                if self._env is not None:
                    self._env.close()
                    self._env = None
                self._release_in_process()
                raise
            self._mark_created()

        with self._opening():
            self._call("open", open_env)

    # --- one environment per path in this process

    def _claim_in_process(self) -> None:
        with _open_here_lock:
            holder = _open_here.get(self._key)
            if holder is not None:
                raise StoreLockedError(
                    f"{self.path} is already open in this process ({holder}); LMDB allows one environment "
                    "per process: close it first, or share that adapter", store=self.name, path=self.path,
                    holder=holder)
            _open_here[self._key] = f"pid {os.getpid()}, {type(self).__name__} {self.name!r}"

    def _release_in_process(self) -> None:
        with _open_here_lock:
            _open_here.pop(self._key, None)

    def _verify_at_rest(self) -> None:
        """Walk every page of data.mdb (python-lmdb's offline verifier, which reads with read(),
        never through a map) when no other process has the environment open.

        LMDB aborts the process (a failed assertion) on a damaged page, e.g. a zeroed branch
        page. Holding LMDB's exclusive lock-file lock (fcntl, byte 0) while walking keeps other
        openers waiting in their open, so the file cannot change underneath; where another
        process holds the environment open, its files are live, not at rest, and the walk is
        skipped. Cost: one read of the file (measured: 19 MB in 0.4 s on a loaded machine).
        """
        try:
            from lmdb import verify as verifier  # python-lmdb 3.0 and later
        except ImportError:
            return
        fd = os.open(os.path.join(self.path, LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o644)  # type: ignore[arg-type]
        try:
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, 0, os.SEEK_SET)
            except OSError as exc:
                if exc.errno in (errno.EACCES, errno.EAGAIN):
                    return  # open in another process
                raise
            try:
                problems = verifier.verify(self.path)
            except verifier.VerifyError as exc:
                problems = [str(exc)]
        finally:
            os.close(fd)  # drops the fcntl lock: this process has no other descriptor of the file
        if problems:
            shown = "; ".join(problems[:3]) + (f"; and {len(problems) - 3} more" if len(problems) > 3 else "")
            raise CorruptStoreError(f"{self._data_path} is damaged (LMDB's structural check): {shown}",
                                    path=self._data_path)

    def _reserve_lock_file(self) -> None:
        """Allocate the lock file's blocks before LMDB maps it and writes its reader table there:
        on a full disk, a store into an unallocated page of a mapped file is a SIGBUS. Allocating
        never changes the bytes, so it is safe while other processes use the file."""
        fd = os.open(os.path.join(self.path, LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o644)  # type: ignore[arg-type]
        try:
            size = os.fstat(fd).st_size
            os.posix_fallocate(fd, 0, size or _LOCK_FILE_BYTES)
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                raise
        finally:
            os.close(fd)

    def _mark_created(self) -> None:
        """Record beside data.mdb that the environment exists (see validate_data_file)."""
        marker = os.path.join(self.path, MARKER_FILE)  # type: ignore[arg-type]
        if os.path.exists(marker):
            return
        try:
            atomic_write(marker, json.dumps({"format": "memsys-lmdb", "value_format": _VALUE_V1}).encode())
        except (OSError, MemsysError):
            pass  # only the emptied-file check needs it; the next open writes it

    # --- map size: shared with other processes

    def _begin(self, write: bool = False) -> Any:
        return self._begin_retrying(lambda: self._env.begin(write=write, db=self._db))

    def _begin_retrying(self, fn: Any) -> Any:
        """``fn`` (which begins a transaction), again after adopting a map another process grew."""
        for _ in range(_MAX_RESIZES):
            try:
                return fn()
            except self._lmdb.MapResizedError:
                # No transaction of ours is open (the store lock is held and every transaction
                # is a with-block), so the environment may remap to the size in the meta page.
                self._env.set_mapsize(0)
        return fn()

    def _grow_map(self) -> None:
        self._env.set_mapsize(self._env.info()["map_size"] * 2)

    # --- errors

    def _translate(self, exc: Exception, operation: str) -> MemsysError:
        lmdb = self._lmdb
        message = f"{self.name}: {operation} on {self.path} failed: {exc}"
        if isinstance(exc, OSError):
            return os_error(exc, f"{self.name}: {operation}", path=exc.filename or self.path, store=self.name)
        if isinstance(exc, lmdb.DiskError) or any(text in str(exc) for text in _DISK_FULL):
            # ENOSPC (EDQUOT, EFBIG) from a page write: the transaction was aborted
            return DiskFullError(f"{message}; nothing of this write was stored; free space and retry",
                                 store=self.name, path=self._data_path)
        if isinstance(exc, lmdb.ReadonlyError):
            return ReadOnlyStoreError(message, store=self.name, path=self.path)
        if isinstance(exc, (lmdb.CorruptedError, lmdb.InvalidError, lmdb.VersionMismatchError,
                            lmdb.PageNotFoundError, lmdb.BadChecksumError)):
            return CorruptStoreError(f"{self.name}: {self.path} is not a readable LMDB environment: {exc}",
                                     path=self.path)
        if isinstance(exc, lmdb.Error) and "already open in this process" in str(exc):
            return StoreLockedError(message, store=self.name, path=self.path, holder=f"pid {os.getpid()}")
        if isinstance(exc, (lmdb.ReadersFullError, lmdb.LockError, lmdb.MapResizedError)):
            return StoreUnavailableError(message, store=self.name)
        return StoreError(message, store=self.name)

    # --- values

    @staticmethod
    def _encode(item: MemoryItem) -> tuple[bytes, bytes]:
        key = item.id.encode()
        kind = item.memory_type.value.encode()
        rest = (_FIELDS_V2.pack(to_epoch_us(item.created_at), to_epoch_us(item.updated_at), len(kind))  # type: ignore[arg-type]
                + kind + json.dumps(item.to_dict(), ensure_ascii=False).encode())
        return key, _HEADER.pack(_VALUE_V2, zlib.crc32(rest)) + rest

    def _decode(self, key: bytes, raw: bytes) -> MemoryItem:
        return self._build(key, self._record(key, raw))

    def _record(self, key: bytes, raw: bytes) -> Any:
        """The value's JSON, checksum verified (CorruptStoreError naming the id if damaged)."""
        first = raw[0] if raw else -1
        if first == _VALUE_V2:
            if len(raw) < _FIELDS_END or zlib.crc32(raw[_HEADER_SIZE:]) != _HEADER.unpack_from(raw)[1]:
                raise self._corrupt(key, "fails its checksum")
            body = raw[_FIELDS_END + raw[_FIELDS_END - 1]:]
        elif first == _VALUE_V1 and len(raw) >= _HEADER_SIZE:
            body = raw[_HEADER_SIZE:]
            if zlib.crc32(body) != _HEADER.unpack_from(raw)[1]:
                raise self._corrupt(key, "fails its checksum")
        elif first == _LEGACY_FIRST_BYTE:
            body = raw  # written before values had a header
        else:
            raise self._corrupt(key, f"has an unknown format byte {first}")
        try:
            return _json_decode(body.decode("utf-8"))
        except ValueError as exc:
            raise self._corrupt(key, f"is not a valid item: {exc}") from exc

    def _build(self, key: bytes, record: Any) -> MemoryItem:
        try:
            item = decode_item(record)
        except (ValueError, TypeError, MemsysError) as exc:
            raise self._corrupt(key, f"is not a valid item: {exc}") from exc
        if item.id.encode() != key:
            raise self._corrupt(key, f"holds the item {item.id!r}")
        return item

    def _corrupt(self, key: bytes, what: str) -> CorruptStoreError:
        item_id = key.decode("utf-8", "replace")
        return CorruptStoreError(f"{self.name}: the value of item {item_id!r} in {self._data_path} {what}",
                                 path=self._data_path)

    # --- primitives

    def _get(self, item_id: str) -> MemoryItem | None:
        key = item_id.encode()
        try:  # the hot path: begin directly, adopt a grown map only when told to
            txn = self._env.begin(db=self._db)
        except self._lmdb.MapResizedError:
            txn = self._begin()
        with txn:
            raw = txn.get(key)
        return None if raw is None else self._decode(key, raw)

    def _get_many(self, item_ids: Sequence[str]) -> dict[str, MemoryItem]:
        found = {}
        with self._begin() as txn:
            for item_id in item_ids:
                key = item_id.encode()
                raw = txn.get(key)
                if raw is not None:
                    found[item_id] = self._decode(key, raw)
        return found

    def _scan(self) -> Iterable[MemoryItem]:
        with self._begin() as txn:
            return [self._decode(key, raw) for key, raw in txn.cursor()]

    def _search(self, query: MemoryQuery) -> list[MemoryItem]:
        if query.ids is not None:  # point reads, not a scan
            return query.select(self._get_many(sorted(query.ids)).values())
        # Every value's checksum is still verified (damage anywhere is still an error), read in
        # place through the map (buffers, no copies); values are parsed only when their header
        # fields admit the query, in (created_at, id) order and up to the limit
        # (``select_records``). Older formats are parsed at once and decided on their item.
        admits, crc32, header, fields = query.field_test(), zlib.crc32, _HEADER.unpack_from, _FIELDS_V2.unpack_from
        candidates: list[tuple[Any, Any]] = []  # (order, key); order None: unsure
        with self._begin_retrying(lambda: self._env.begin(db=self._db, buffers=True)) as txn:
            for key, raw in txn.cursor():
                if len(raw) < _FIELDS_END or raw[0] != _VALUE_V2:
                    candidates.append((None, bytes(key)))
                    continue
                if crc32(raw[_HEADER_SIZE:]) != header(raw)[1]:
                    raise self._corrupt(bytes(key), "fails its checksum")
                created_us, updated_us, size = fields(raw, _HEADER_SIZE)
                if admits(str(raw[_FIELDS_END:_FIELDS_END + size], "ascii", "replace"), created_us, updated_us):
                    key = bytes(key)
                    candidates.append(((created_us, key.decode("utf-8", "replace")), key))

            def decode(candidate: tuple[Any, bytes]) -> MemoryItem:
                return self._decode(candidate[1], bytes(txn.get(candidate[1])))
            return query.select_records(candidates, decode, key=_first, item_key=_order)

    def _count(self) -> int:
        with self._begin() as txn:
            return int(txn.stat(self._db)["entries"])

    def _check_file_size(self) -> None:
        """A data.mdb truncated under an open environment is read past its end by the next
        transaction (SIGBUS); refuse the write instead. Meta first: the file grows before it."""
        needed = (self._env.info()["last_pgno"] + 1) * self._psize
        size = os.path.getsize(self._data_path)
        if size < needed:
            raise CorruptStoreError(f"{self.name}: {self._data_path} was truncated while open ({size} bytes, "
                                    f"the last commit uses {needed}); close every process using it",
                                    path=self._data_path)

    def _apply(self, ops: Sequence[Operation], durable: bool) -> None:
        encoded = [self._encode(op.item) if isinstance(op, Put) else (op.item_id.encode(), None)
                   for op in ops if isinstance(op, (Put, Delete))]
        self._check_file_size()
        for _ in range(_MAX_GROWTHS):
            try:
                with self._begin(write=True) as txn:
                    for key, value in encoded:
                        if value is None:
                            txn.delete(key)
                        else:
                            txn.put(key, value)
                break
            except self._lmdb.MapFullError:
                self._grow_map()  # the with-block aborted the transaction: nothing is open now
        else:  # pragma: no cover - 2**40 times the initial map
            raise StoreError(f"{self.name}: the map could not grow enough", store=self.name)
        if durable and not self.sync:
            self._env.sync(True)

    def _flush(self) -> None:
        self._env.sync(True)

    def _close(self) -> None:
        try:
            if self._env is not None:
                self._env.close()
        finally:
            self._release_in_process()
