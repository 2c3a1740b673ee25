"""Durable files, shared by the adapters, the coordinator and the resilience queues.

``PathLock`` keeps a second opener (another process, or another object in this
process) off a store's path or a log: an OS file lock (flock) that dies with
its process, so a crash never leaves a stale lock. ``os_error`` turns an
OSError from the file system into the memsys error that says what happened
(disk full, read-only, ...), so every layer reports a full disk the same way.

``atomic_write`` replaces a file so that a crash leaves either the old or the
new content, never a mix: write a temporary file in the same folder, fsync it,
rename it over the target, fsync the folder.

``Journal`` is a snapshot plus an append-only log of operation batches, for
stores that hold their state in memory (NetworkX, FAISS). A write appends one
checksummed record and fsyncs it, so its cost does not grow with the store;
when the log outgrows the snapshot, the snapshot is rewritten atomically and
the log restarts. On open the snapshot is loaded and newer records replayed.
A torn last record (a crash mid-append, never acknowledged) is ignored and cut
off at the next append; damage anywhere else is a CorruptStoreError, and the
files are left as they are.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import struct
import tempfile
import zlib
from collections.abc import Callable, Iterator
from typing import Any

from memsys.domain.errors import (
    CorruptStoreError,
    DiskFullError,
    MemsysError,
    ReadOnlyStoreError,
    StoreError,
    StoreLockedError,
)

log = logging.getLogger("memsys.durable")

_JOURNAL_MAGIC = b"MEMSYS-JOURNAL-1\n"
_SNAPSHOT_MAGIC = b"MEMSYS-SNAPSHOT-1\n"
_FRAME = struct.Struct("<II")  # payload length, crc32 of payload


_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
_READ_ONLY = {errno.EROFS, errno.EACCES, errno.EPERM}


def os_error(exc: OSError, what: str, *, path: str | None = None, store: str | None = None) -> MemsysError:
    """The memsys error for an OSError met while doing ``what`` (chain it: ``raise ... from exc``)."""
    path = path or getattr(exc, "filename", None)
    where = f" ({path})" if path else ""
    if exc.errno in _FULL:
        return DiskFullError(f"{what} failed: the disk is full{where}: {exc.strerror or exc}; nothing was "
                             "written; free space and retry", store=store, path=path)
    if exc.errno in _READ_ONLY:
        return ReadOnlyStoreError(f"{what} failed: the file system refuses writes{where}: {exc.strerror or exc}",
                                  store=store, path=path)
    return StoreError(f"{what} failed{where}: {type(exc).__name__}: {exc}", store=store)


class PathLock:
    """An exclusive OS lock on ``path`` (a file or folder), held in ``path + ".memsys-lock"``.

    flock locks belong to an open file description, so a second object in the same process is
    refused as surely as a second process; the kernel drops the lock when its holder dies.
    The lock file records the holder (pid, what it opened) for the error the next opener sees.
    """

    SUFFIX = ".memsys-lock"

    def __init__(self, path: str, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, path: str | os.PathLike[str], *, owner: str, store: str | None = None) -> PathLock:
        path = os.path.abspath(os.fspath(path))
        lock_path = path + cls.SUFFIX
        try:
            os.makedirs(os.path.dirname(lock_path), exist_ok=True)
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise os_error(exc, f"locking {path}", path=lock_path, store=store) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            try:
                holder = os.pread(fd, 512, 0).decode("utf-8", "replace").strip() or "unknown"
            finally:
                os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise StoreLockedError(f"{path} is already open ({holder}); close it there first, or open "
                                       "another path", store=store, path=path, holder=holder) from exc
            raise os_error(exc, f"locking {path}", path=lock_path, store=store) from exc
        try:
            note = f"pid {os.getpid()}, {owner}".encode()
            os.ftruncate(fd, 0)
            os.pwrite(fd, note, 0)
        except OSError:
            pass  # the note is for the error message only; a full disk must not stop the open
        return cls(path, fd)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # closing the last descriptor drops the flock

    def __enter__(self) -> PathLock:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()


def remove_stale_temps(folder: str, name: str) -> int:
    """Delete temporary files ``atomic_write`` left for ``name`` when a process died mid-write.

    Only safe while the caller holds the path's lock: no live writer can own them then.
    """
    removed = 0
    prefix = f".{name}."
    try:
        entries = os.listdir(folder)
    except OSError:
        return 0
    for entry in entries:
        if entry.startswith(prefix) and entry.endswith(".tmp"):
            try:
                os.unlink(os.path.join(folder, entry))
                removed += 1
            except OSError:
                pass
    return removed


def fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str, data: bytes, *, sync: bool = True) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            if sync:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    if sync:
        fsync_dir(folder)


def frame(payload: bytes) -> bytes:
    """A record as logs store it: length, crc32, payload."""
    return _FRAME.pack(len(payload), zlib.crc32(payload)) + payload


def read_frames(path: str, data: bytes, offset: int) -> Iterator[tuple[bytes, int]]:
    """(payload, end offset) of each intact record from ``offset``. A torn last record (a crash
    mid-append, never acknowledged) ends the iteration; damage before the end is corruption."""
    while offset + _FRAME.size <= len(data):
        length, crc = _FRAME.unpack_from(data, offset)
        start, end = offset + _FRAME.size, offset + _FRAME.size + length
        if end > len(data):
            return  # torn payload at the tail
        payload = data[start:end]
        if zlib.crc32(payload) != crc:
            if end == len(data):
                return  # the last record was torn in place
            raise CorruptStoreError(f"{path}: record at byte {offset} fails its checksum", path=path)
        yield payload, end
        offset = end


def pack_snapshot(header: dict[str, Any], body: bytes) -> bytes:
    """Magic, a JSON header line, the body; the header carries the body's length and checksum."""
    header = {**header, "body_length": len(body), "body_crc32": zlib.crc32(body)}
    return _SNAPSHOT_MAGIC + json.dumps(header).encode() + b"\n" + body


def unpack_snapshot(path: str, data: bytes) -> tuple[dict[str, Any], bytes]:
    if not data.startswith(_SNAPSHOT_MAGIC):
        raise CorruptStoreError(f"{path} is not a memsys snapshot (bad magic)", path=path)
    try:
        line_end = data.index(b"\n", len(_SNAPSHOT_MAGIC))
        header = json.loads(data[len(_SNAPSHOT_MAGIC):line_end])
        body = data[line_end + 1:]
        intact = len(body) == header["body_length"] and zlib.crc32(body) == header["body_crc32"]
    except (ValueError, KeyError, TypeError) as exc:
        raise CorruptStoreError(f"{path}: unreadable snapshot header: {exc}", path=path) from exc
    if not intact:
        raise CorruptStoreError(f"{path}: snapshot body fails its checksum", path=path)
    return header, body


class Journal:
    """A snapshot file and a log of batches in one folder.

    The owner supplies ``dump_state() -> (header, body)`` to write a snapshot;
    ``open`` returns the snapshot (or None) and the batches logged after it.
    """

    def __init__(self, folder: str, snapshot_name: str, *, sync: bool = True,
                 compact_bytes: int = 4 << 20) -> None:
        self.folder = folder
        self.snapshot_path = os.path.join(folder, snapshot_name)
        self.log_path = os.path.join(folder, "journal.log")
        self.sync = sync
        self.compact_bytes = compact_bytes
        self.seq = 0
        self._file: Any = None
        self._good_size = 0
        self._snapshot_size = 0

    def open(self) -> tuple[tuple[dict[str, Any], bytes] | None, list[Any]]:
        os.makedirs(self.folder, exist_ok=True)
        snapshot = None
        snapshot_seq = 0
        if os.path.exists(self.snapshot_path):
            with open(self.snapshot_path, "rb") as f:
                data = f.read()
            snapshot = unpack_snapshot(self.snapshot_path, data)
            snapshot_seq = int(snapshot[0].get("seq", 0))
            self._snapshot_size = len(data)
        self.seq = snapshot_seq
        batches = []
        if os.path.exists(self.log_path):
            for seq, batch in self._read_log():
                if seq > snapshot_seq:
                    if seq != self.seq + 1:
                        raise CorruptStoreError(f"{self.log_path}: record {seq} follows {self.seq}",
                                                path=self.log_path)
                    batches.append(batch)
                    self.seq = seq
        return snapshot, batches

    def _read_log(self) -> list[tuple[int, Any]]:
        with open(self.log_path, "rb") as f:
            data = f.read()
        if not data.startswith(_JOURNAL_MAGIC):
            if _JOURNAL_MAGIC.startswith(data):  # torn while writing the header
                self._good_size = 0
                return []
            raise CorruptStoreError(f"{self.log_path} is not a memsys journal (bad magic)", path=self.log_path)
        records = []
        offset = len(_JOURNAL_MAGIC)
        for payload, end in read_frames(self.log_path, data, offset):
            try:
                record = json.loads(payload)
                records.append((int(record["seq"]), record["batch"]))
            except (ValueError, KeyError, TypeError) as exc:
                raise CorruptStoreError(f"{self.log_path}: record at byte {offset} is unreadable: {exc}",
                                        path=self.log_path) from exc
            offset = end
        self._good_size = offset
        return records

    def _writer(self) -> Any:
        if self._file is None:
            fresh = not os.path.exists(self.log_path) or self._good_size == 0
            self._file = open(self.log_path, "r+b" if not fresh else "wb")
            if fresh:
                self._file.write(_JOURNAL_MAGIC)
                self._good_size = len(_JOURNAL_MAGIC)
            self._file.truncate(self._good_size)  # drop a torn tail before appending
            self._file.seek(self._good_size)
        return self._file

    def append(self, batch: Any, *, durable: bool = True) -> None:
        payload = json.dumps({"seq": self.seq + 1, "batch": batch}, ensure_ascii=False).encode()
        f = self._writer()
        try:
            f.write(frame(payload))
            f.flush()
            if durable and self.sync:
                os.fsync(f.fileno())
        except BaseException:
            self._file = None  # reopen, and cut off whatever part of the record reached the file
            f.close()
            raise
        self._good_size = f.tell()
        self.seq += 1

    def maybe_compact(self, dump_state: Callable[[], tuple[dict[str, Any], bytes]]) -> None:
        """Compact when the log outgrows the snapshot. A failure here loses nothing (the
        log still holds every batch), so it is logged and tried again after the next append."""
        if self._good_size > max(self.compact_bytes, self._snapshot_size):
            try:
                self.compact(dump_state)
            except OSError:
                log.warning("compaction of %s failed; the journal keeps every batch", self.folder, exc_info=True)

    def compact(self, dump_state: Callable[[], tuple[dict[str, Any], bytes]]) -> None:
        """Write the whole state as a snapshot at the current seq, then start an empty log."""
        header, body = dump_state()
        data = pack_snapshot({**header, "seq": self.seq}, body)
        atomic_write(self.snapshot_path, data, sync=True)
        self._snapshot_size = len(data)
        if self._file is not None:
            self._file.close()
            self._file = None
        atomic_write(self.log_path, _JOURNAL_MAGIC, sync=True)
        self._good_size = len(_JOURNAL_MAGIC)

    def flush(self) -> None:
        if self._file is not None:
            self._file.flush()
            os.fsync(self._file.fileno())

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
