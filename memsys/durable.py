"""Durable files, shared by the adapters, the coordinator and the resilience queues.

``PathLock`` keeps a second opener (another process, or another object in this
process) off a store's path or a log: an OS file lock (flock) that dies with
its process, so a crash never leaves a stale lock. ``os_error`` turns an
OSError from the file system into the memsys error that says what happened
(disk full, read-only, ...), so every layer reports a full disk the same way.

``atomic_write`` replaces a file so that a crash leaves either the old or the
new content, never a mix: write a temporary file in the same folder, fsync it,
rename it over the target, fsync the folder. A failure leaves no temporary file.

``frame``/``read_frames`` are the one record framing of memsys' logs, and
``FramedLog`` the one writer of such a log: an append is all or nothing, a full
disk leaves the file as it was, and only a torn tail (a crash mid-append, never
acknowledged) is ever dropped; damage before the tail is a CorruptStoreError
naming the file and offset, and the file is left as it is.

``Journal`` is a snapshot plus an append-only log of operation batches, for
stores that hold their state in memory (NetworkX, FAISS). A write appends one
checksummed record and fsyncs it, so its cost does not grow with the store;
when the log outgrows the snapshot, the snapshot is rewritten atomically and
the log restarts. On open the snapshot is loaded and newer records replayed.
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

_SNAPSHOT_MAGIC = b"MEMSYS-SNAPSHOT-1\n"
_SNAPSHOT_MAGIC_2 = b"MEMSYS-SNAPSHOT-2\n"


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
        if fd is None:
            return
        # Unlock explicitly first: if close then fails and leaves the descriptor open (POSIX
        # allows it), the path is still free for the next opener. Errors are logged, not raised:
        # release runs on error paths (a failed open, close()) whose own error must not be hidden.
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        except OSError as exc:
            if exc.errno == errno.EBADF:  # closed elsewhere already, which dropped the lock with it
                log.warning("the lock file %s%s was closed behind its lock's back (%s)", self.path, self.SUFFIX, exc)
                return
            log.warning("unlocking %s%s failed (%s); closing its descriptor anyway", self.path, self.SUFFIX, exc)
        try:
            os.close(fd)
        except OSError as exc:
            log.warning("closing the lock file %s%s failed (%s); the lock was released, the descriptor may "
                        "have leaked", self.path, self.SUFFIX, exc)

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


def _write_all(fd: int, data: bytes, offset: int) -> None:
    """pwrite all of ``data`` at ``offset``: a full disk may first accept part of it, then refuse."""
    view = memoryview(data)
    done = 0
    while done < len(view):
        n = os.pwrite(fd, view[done:], offset + done)
        if n <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        done += n


def atomic_write(path: str | os.PathLike[str], data: bytes, *, sync: bool = True, store: str | None = None) -> None:
    """Replace ``path`` by ``data``: a crash or a full disk leaves the old content, and no temporary
    file. An OSError is raised as the memsys error that says what happened (``os_error``)."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    tmp: str | None = None
    try:
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
        try:
            _write_all(fd, data, 0)
            if sync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        tmp = None
        if sync:
            fsync_dir(folder)
    except OSError as exc:
        raise os_error(exc, f"writing {path}", path=path, store=store) from exc
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass


# --- record framing ------------------------------------------------------------------------------
#
# Version 1 (files written before version 2): length, crc32(payload), payload. A flipped bit in
# the length cannot be told from a torn last record, so its reader looks further (see below).
# Version 2: length, crc32(payload), crc32(the 8 bytes before it), payload. The header checks
# itself, so a damaged length is corruption, never a torn tail.
#
# What a reader may drop as a torn tail (a crash mid-append, never acknowledged), and only at
# the end of the file: a partial header; an intact header whose payload runs past the end of
# the file; and bytes of zeros (a file extended before its data reached the disk, or padded).
# Anything else that fails a checksum is CorruptStoreError naming the file and byte offset.

FRAME_VERSION = 2
_FRAME_V1 = struct.Struct("<II")  # payload length, crc32 of payload
_FRAME_V2 = struct.Struct("<III")  # payload length, crc32 of payload, crc32 of the first 8 bytes
_FRAMES = {1: _FRAME_V1, 2: _FRAME_V2}


def frame(payload: bytes, *, version: int = 1) -> bytes:
    """A record as logs store it. New files use ``version=FRAME_VERSION`` behind a magic that names
    it (``log_magic``); the default stays 1 for callers whose files do not say their version yet."""
    if version == 2:
        head = struct.pack("<II", len(payload), zlib.crc32(payload))
        return head + struct.pack("<I", zlib.crc32(head)) + payload
    if version == 1:
        return _FRAME_V1.pack(len(payload), zlib.crc32(payload)) + payload
    raise ValueError(f"unknown frame version {version}")


def read_frames(path: str, data: bytes, offset: int, *, version: int = 1) -> Iterator[tuple[bytes, int]]:
    """(payload, end offset) of each intact record from ``offset``; a torn tail ends the iteration,
    damage before it raises CorruptStoreError (file and byte offset)."""
    if version not in _FRAMES:
        raise CorruptStoreError(f"{path}: unknown record format version {version}", path=path)
    size = _FRAMES[version].size
    # Where the zeros at the end of the file begin: bytes past it were never written.
    written = len(data.rstrip(b"\0")) if data.endswith(b"\0") else len(data)
    while offset < len(data):
        if offset >= written:
            return  # nothing but zeros left: a torn (padded) tail
        if offset + size > len(data):
            return  # a partial header is the last thing in the file
        if version == 2:
            length, crc, head_crc = _FRAME_V2.unpack_from(data, offset)
            if zlib.crc32(data[offset:offset + 8]) != head_crc:
                if written < offset + size:
                    return  # a header cut short, the rest zeros
                raise CorruptStoreError(f"{path}: the header of the record at byte {offset} fails its checksum "
                                        f"({len(data) - offset} bytes from there on are unreadable)", path=path)
        else:
            length, crc = _FRAME_V1.unpack_from(data, offset)
        start, end = offset + size, offset + size + length
        if end > len(data):
            if version == 1 and _v1_record_follows(data, start):
                raise CorruptStoreError(f"{path}: the record at byte {offset} claims {length} bytes, past the end "
                                        "of the file, but intact records follow it: its length is damaged",
                                        path=path)
            return  # the last record, torn: its payload runs past the end of the file
        payload = data[start:end]
        if zlib.crc32(payload) != crc:
            # A record torn in place: the size covers it but its end never reached the disk (zeros).
            # Version 1 cannot tell that from a flipped bit in its last record and keeps its old rule.
            torn = written < end if version == 2 else end >= written
            if torn:
                return
            raise CorruptStoreError(f"{path}: record at byte {offset} fails its checksum", path=path)
        yield payload, end
        offset = end


def _v1_record_follows(data: bytes, start: int) -> bool:
    """Whether an intact version-1 record starts anywhere after ``start``: then the record before
    it was not torn, its length was damaged. Every memsys payload is a JSON object, so the
    candidates are the "{" bytes; inside JSON text the 4 bytes before one never make a length
    that fits in the file, so only real headers are checksummed."""
    pos = data.find(b"{", start + _FRAME_V1.size)
    while pos != -1:
        length, crc = _FRAME_V1.unpack_from(data, pos - _FRAME_V1.size)
        if pos + length <= len(data) and zlib.crc32(data[pos:pos + length]) == crc and length:
            return True
        pos = data.find(b"{", pos + 1)
    return False


def log_magic(kind: str, version: int = FRAME_VERSION) -> bytes:
    """The first line of a framed file: what it is and which record format follows."""
    return f"MEMSYS-{kind}-{version}\n".encode()


def read_magic(path: str, data: bytes, kind: str) -> tuple[int | None, int]:
    """(record format version, offset of the first record) of a framed file's content; (None, 0)
    for a file torn while its magic was written (it holds nothing). Anything else is corruption."""
    magics = {v: log_magic(kind, v) for v in _FRAMES}
    for version, magic in magics.items():
        if data.startswith(magic):
            return version, len(magic)
    if any(magic.startswith(data) for magic in magics.values()):
        return None, 0
    # Writers before version 2 recorded the magic before it reached the disk; after a full disk they
    # padded the file with zeros up to it and appended acknowledged records behind the zeros.
    legacy = magics[1]
    head = data[:len(legacy)]
    if len(data) > len(legacy) and legacy.startswith(head.rstrip(b"\0")):
        if next(read_frames(path, data, len(legacy), version=1), None) is not None:
            log.warning("%s: its magic was lost to a full disk (zeros); reading the records behind it", path)
            return 1, len(legacy)
    raise CorruptStoreError(f"{path} is not a memsys {kind.lower()} file (bad magic)", path=path)


class FramedLog:
    """An append-only file of framed records behind a magic line.

    An append is all or nothing: the records are written at the end of the last intact record
    with one pwrite (never through a buffer, so nothing is counted before it is in the file),
    fsynced when asked, and only then counted. After any failed write or fsync the file is cut
    back to that end (again before the next append, if cutting failed), so a full disk leaves
    the file as it was and the next append after space returns lands on an intact file; the
    magic is written together with the first record, never counted ahead of it. A file in an
    older format is rewritten in the current one (atomically) before the first append.
    """

    def __init__(self, path: str, kind: str, *, store: str | None = None) -> None:
        self.path = path
        self.kind = kind
        self.store = store
        self.version = FRAME_VERSION
        self._fd: int | None = None
        self._end = 0  # end of the last intact record; 0 while the file holds no magic
        self._cut = True  # the file may hold bytes past _end (a torn tail, a failed write)
        self._read = False
        self._unsynced = False  # appended without fsync since the last one

    @property
    def size(self) -> int:
        return self._end

    def read(self) -> list[tuple[int, bytes]]:
        """(byte offset, payload) of every intact record; a torn tail is left for the next append to
        cut. Damage before the tail raises CorruptStoreError and the file is left as it is."""
        self.close()
        # Until a read succeeds, appends refuse (they read again): never write over a damaged file.
        self._read, self._end, self._cut, self.version = False, 0, True, FRAME_VERSION
        try:
            with open(self.path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            data = b""
        except OSError as exc:
            raise os_error(exc, f"reading {self.path}", path=self.path, store=self.store) from exc
        version, offset = read_magic(self.path, data, self.kind)
        records = []
        if version is not None:
            for payload, end in read_frames(self.path, data, offset, version=version):
                records.append((offset, payload))
                offset = end
            if offset < len(data):
                log.warning("%s: ignoring a torn last record (%d bytes at byte %d)", self.path,
                            len(data) - offset, offset)
            self.version, self._end = version, offset
        self._read = True
        return records

    def append(self, payloads: list[bytes], *, sync: bool) -> None:
        """Append ``payloads`` as records, all or none; raise the memsys error for an OSError."""
        if not self._read:
            self.read()
        if self.version != FRAME_VERSION:
            self._upgrade()
        data = b"".join(frame(p, version=FRAME_VERSION) for p in payloads)
        fresh = self._end == 0
        if fresh:
            data = log_magic(self.kind) + data
        try:
            fd = self._writer()
            _write_all(fd, data, self._end)
            if sync:
                os.fsync(fd)
                if fresh:
                    fsync_dir(os.path.dirname(os.path.abspath(self.path)))
        except OSError as exc:
            self._cut_back()
            raise os_error(exc, f"appending to {self.path}", path=self.path, store=self.store) from exc
        except BaseException:
            self._cut_back()
            raise
        self._end += len(data)
        self._unsynced = self._unsynced or not sync

    def rewrite(self, payloads: list[bytes], *, sync: bool) -> None:
        """Replace the whole file by ``payloads`` in the current format (atomic_write)."""
        data = log_magic(self.kind) + b"".join(frame(p, version=FRAME_VERSION) for p in payloads)
        atomic_write(self.path, data, sync=sync, store=self.store)
        self.close()
        self._read, self._end, self._cut, self.version = True, len(data), True, FRAME_VERSION
        self._unsynced = not sync

    def flush(self) -> None:
        """fsync what was appended without ``sync`` (even if a later append failed and closed the file)."""
        if not self._unsynced:
            return
        try:
            os.fsync(self._writer())
        except OSError as exc:
            raise os_error(exc, f"syncing {self.path}", path=self.path, store=self.store) from exc
        self._unsynced = False

    def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            self._cut = True
            try:
                os.close(fd)
            except OSError:
                log.warning("closing %s failed", self.path, exc_info=True)

    def _writer(self) -> int:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            self._cut = True
        if self._cut:
            size = os.fstat(self._fd).st_size
            if size < self._end:  # never pad: zeros where records were would destroy the file
                raise CorruptStoreError(f"{self.path} is {size} bytes, shorter than the {self._end} bytes of "
                                        "records written to it: something else truncated it", path=self.path)
            if size > self._end:
                # Drop a torn tail, or what a failed append left, durably: a power loss must not bring
                # back records of an append that raised.
                os.ftruncate(self._fd, self._end)
                os.fsync(self._fd)
            self._cut = False
        return self._fd

    def _cut_back(self) -> None:
        """After a failed append: cut the file back to its last intact record now if possible, else
        before the next append; on a new descriptor (one whose fsync failed is not trusted)."""
        self.close()
        try:
            self._writer()
        except (OSError, MemsysError):
            log.warning("%s: cutting back a failed append failed; the next append tries again", self.path,
                        exc_info=True)

    def _upgrade(self) -> None:
        """Rewrite an older-format file's intact records in the current format, atomically."""
        self.rewrite([payload for _, payload in self._reread()], sync=True)

    def _reread(self) -> list[tuple[int, bytes]]:
        end, records = self._end, self.read()
        if self._end != end:
            raise CorruptStoreError(f"{self.path} changed while it was open", path=self.path)
        return records


def pack_snapshot(header: dict[str, Any], body: bytes) -> bytes:
    """Magic, a JSON header line ending in the header's own crc32, the body; the header carries
    the body's length and checksum. A flipped bit anywhere is caught, header included."""
    header = {**header, "body_length": len(body), "body_crc32": zlib.crc32(body)}
    line = json.dumps(header).encode()
    return _SNAPSHOT_MAGIC_2 + line + b" %08x\n" % zlib.crc32(line) + body


def unpack_snapshot(path: str, data: bytes) -> tuple[dict[str, Any], bytes]:
    if data.startswith(_SNAPSHOT_MAGIC_2):
        start, checked = len(_SNAPSHOT_MAGIC_2), True
    elif data.startswith(_SNAPSHOT_MAGIC):  # version 1: the header had no checksum of its own
        start, checked = len(_SNAPSHOT_MAGIC), False
    else:
        raise CorruptStoreError(f"{path} is not a memsys snapshot (bad magic)", path=path)
    try:
        line_end = data.index(b"\n", start)
        line = data[start:line_end]
        if checked:
            line, crc = line[:-9], line[-9:]
            if crc[:1] != b" " or int(crc[1:], 16) != zlib.crc32(line):
                raise CorruptStoreError(f"{path}: snapshot header (bytes {start}-{line_end}) fails its checksum",
                                        path=path)
        header = json.loads(line)
        body = data[line_end + 1:]
        intact = len(body) == header["body_length"] and zlib.crc32(body) == header["body_crc32"]
    except (ValueError, KeyError, TypeError) as exc:
        raise CorruptStoreError(f"{path}: unreadable snapshot header: {exc}", path=path) from exc
    if not isinstance(header, dict) or not intact:
        raise CorruptStoreError(f"{path}: snapshot body fails its checksum", path=path)
    return header, body


class Journal:
    """A snapshot file and a log of batches in one folder.

    The owner supplies ``dump_state() -> (header, body)`` to write a snapshot;
    ``open`` returns the snapshot (or None) and the batches logged after it.
    A failed append or compaction raises the memsys error for it (DiskFullError
    on a full disk) and leaves the files as they were.
    """

    def __init__(self, folder: str, snapshot_name: str, *, sync: bool = True,
                 compact_bytes: int = 4 << 20, store: str | None = None, log_name: str = "journal.log") -> None:
        self.folder = folder
        self.log_name = log_name
        self.snapshot_name = snapshot_name
        self.snapshot_path = os.path.join(folder, snapshot_name)
        self.log_path = os.path.join(folder, log_name)
        self.sync = sync
        self.compact_bytes = compact_bytes
        self.store = store
        self.seq = 0
        self._log = FramedLog(self.log_path, "JOURNAL", store=store)
        self._snapshot_size = 0

    def open(self) -> tuple[tuple[dict[str, Any], bytes] | None, list[Any]]:
        """Load the snapshot and the batches after it. The owner holds the folder's PathLock, so
        temporary files of a write that a killed process left behind can go."""
        try:
            os.makedirs(self.folder, exist_ok=True)
        except OSError as exc:
            raise os_error(exc, f"creating {self.folder}", path=self.folder, store=self.store) from exc
        for name in (self.snapshot_name, self.log_name):
            remove_stale_temps(self.folder, name)
        snapshot = None
        snapshot_seq = 0
        if os.path.exists(self.snapshot_path):
            try:
                with open(self.snapshot_path, "rb") as f:
                    data = f.read()
            except OSError as exc:
                raise os_error(exc, f"reading {self.snapshot_path}", path=self.snapshot_path,
                               store=self.store) from exc
            snapshot = unpack_snapshot(self.snapshot_path, data)
            snapshot_seq = int(snapshot[0].get("seq", 0))
            self._snapshot_size = len(data)
        self.seq = snapshot_seq
        batches = []
        for seq, batch in self._read_log():
            if seq > snapshot_seq:
                if seq != self.seq + 1:
                    raise CorruptStoreError(f"{self.log_path}: record {seq} follows {self.seq}", path=self.log_path)
                batches.append(batch)
                self.seq = seq
        return snapshot, batches

    def _read_log(self) -> list[tuple[int, Any]]:
        records = []
        for offset, payload in self._log.read():
            try:
                record = json.loads(payload)
                records.append((int(record["seq"]), record["batch"]))
            except (ValueError, KeyError, TypeError) as exc:
                raise CorruptStoreError(f"{self.log_path}: record at byte {offset} is unreadable: {exc}",
                                        path=self.log_path) from exc
        return records

    def append(self, batch: Any, *, durable: bool | None = None) -> None:
        """Log one batch; ``durable`` (default: the journal's ``sync``) fsyncs it before returning.
        An explicit request wins over ``sync=False``: a caller with no other durable copy asks for it."""
        payload = json.dumps({"seq": self.seq + 1, "batch": batch}, ensure_ascii=False).encode()
        self._log.append([payload], sync=self.sync if durable is None else durable)
        self.seq += 1

    def maybe_compact(self, dump_state: Callable[[], tuple[dict[str, Any], bytes]]) -> None:
        """Compact when the log outgrows the snapshot. A failure here loses nothing (the
        log still holds every batch), so it is logged and tried again after the next append."""
        if self._log.size > max(self.compact_bytes, self._snapshot_size):
            try:
                self.compact(dump_state)
            except (OSError, DiskFullError, ReadOnlyStoreError, StoreError):
                log.warning("compaction of %s failed; the journal keeps every batch", self.folder, exc_info=True)

    def compact(self, dump_state: Callable[[], tuple[dict[str, Any], bytes]]) -> None:
        """Write the whole state as a snapshot at the current seq, then start an empty log. If the
        log cannot be emptied, the snapshot's seq makes the next open skip the records it holds."""
        header, body = dump_state()
        data = pack_snapshot({**header, "seq": self.seq}, body)
        atomic_write(self.snapshot_path, data, sync=True, store=self.store)
        self._snapshot_size = len(data)
        self._log.rewrite([], sync=True)

    def flush(self) -> None:
        self._log.flush()

    def close(self) -> None:
        self._log.close()
