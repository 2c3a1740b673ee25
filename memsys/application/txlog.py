"""The durable coordinator log of cross-store transactions.

One append-only file of checksummed records (same framing as the store
journals):

    prepare     {"t": "prepare", "lsn", "txid", "stores"}    written, not synced
    commit      {"t": "commit", "lsn", "txid", "ops": {store: [op, ...]}, "ts"}
                the decision, with the whole write set; fsynced before any store applies it
    end         {"t": "end", "lsns": [...]}                  every store applied; not synced
    checkpoint  {"t": "checkpoint", "lsn"}                   first record after compaction:
                everything up to lsn is durable in the stores

Commit records of concurrent transactions are appended together and synced
once (group commit). Recovery redoes every commit after the last checkpoint,
in LSN order (stores may apply without syncing, so an "end" proves only that
a store saw the write, not that it kept it through a power loss); a prepare
without a commit is presumed aborted. Compaction, after every store has been
flushed, replaces the file with a single checkpoint, so the log does not grow
without bound.
"""

from __future__ import annotations

import dataclasses
import json
import os
import threading
from collections.abc import Iterable
from typing import Any

from memsys.durable import atomic_write, frame, fsync_dir, read_frames
from memsys.domain.errors import CorruptStoreError

MAGIC = b"MEMSYS-TXLOG-1\n"


@dataclasses.dataclass
class LogScan:
    """What a log holds: the checkpoint, the commits after it, and what each record said."""

    checkpoint_lsn: int = 0
    max_lsn: int = 0
    commits: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    ended: set[int] = dataclasses.field(default_factory=set)
    prepared: dict[int, dict[str, Any]] = dataclasses.field(default_factory=dict)
    records: int = 0
    torn_tail: bool = False

    @property
    def undecided(self) -> list[dict[str, Any]]:
        committed = {c["lsn"] for c in self.commits}
        return [p for lsn, p in sorted(self.prepared.items())
                if lsn not in committed and lsn > self.checkpoint_lsn]

    @property
    def unended(self) -> list[dict[str, Any]]:
        return [c for c in self.commits if c["lsn"] not in self.ended]


def _frame(record: dict[str, Any]) -> bytes:
    return frame(json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode())


class CoordinatorLog:
    """The file, its group appends, its scan and its compaction. Thread-safe."""

    durable = True

    def __init__(self, path: str | os.PathLike[str], *, sync: bool = True) -> None:
        self.path = os.fspath(path)
        self.sync = sync
        self._lock = threading.Lock()
        self._file: Any = None
        self._size = 0
        self.records_since_checkpoint = 0

    # --- reading

    def scan(self) -> LogScan:
        """Read the whole log. A torn last record is ignored (it was never acknowledged)."""
        result = LogScan()
        if not os.path.exists(self.path):
            return result
        with open(self.path, "rb") as f:
            data = f.read()
        if not data.startswith(MAGIC):
            if MAGIC.startswith(data):
                result.torn_tail = True
                return result
            raise CorruptStoreError(f"{self.path} is not a memsys coordinator log (bad magic)", path=self.path)
        offset = len(MAGIC)
        for payload, end in read_frames(self.path, data, offset):
            try:
                record = json.loads(payload)
            except ValueError as exc:
                raise CorruptStoreError(f"{self.path}: record at byte {offset} is unreadable", path=self.path) from exc
            result.records += 1
            kind = record.get("t")
            if kind == "checkpoint":
                result.checkpoint_lsn = int(record["lsn"])
                result.commits = [c for c in result.commits if c["lsn"] > result.checkpoint_lsn]
            elif kind == "commit":
                result.commits.append(record)
            elif kind == "end":
                result.ended.update(int(lsn) for lsn in record["lsns"])
            elif kind == "prepare":
                result.prepared[int(record["lsn"])] = record
            else:
                raise CorruptStoreError(f"{self.path}: unknown record type {kind!r}", path=self.path)
            result.max_lsn = max(result.max_lsn, int(record.get("lsn", 0)))
            offset = end
        result.torn_tail = offset < len(data)
        result.commits.sort(key=lambda c: c["lsn"])
        self._size = offset
        self.records_since_checkpoint = result.records
        return result

    # --- writing

    def _writer(self) -> Any:
        if self._file is None:
            exists = os.path.exists(self.path) and self._size >= len(MAGIC)
            self._file = open(self.path, "r+b" if exists else "wb")
            if not exists:
                self._file.write(MAGIC)
                self._size = len(MAGIC)
                self._file.flush()
                if self.sync:
                    os.fsync(self._file.fileno())
                    fsync_dir(os.path.dirname(os.path.abspath(self.path)))
            self._file.truncate(self._size)  # cut a torn tail off before appending
            self._file.seek(self._size)
        return self._file

    def append(self, records: Iterable[dict[str, Any]], *, sync: bool) -> None:
        """Append records in one write; fsync when ``sync`` (the decision records).

        The fsync runs outside the lock: it flushes everything written before it, and other
        threads may keep appending (unsynced records) meanwhile instead of queueing behind it.
        """
        records = list(records)
        data = b"".join(_frame(r) for r in records)
        if not data:
            return
        with self._lock:
            f = self._writer()
            try:
                f.write(data)
                f.flush()
            except BaseException:
                self._file = None  # reopen at the last good size next time
                f.close()
                raise
            self._size += len(data)
            self.records_since_checkpoint += len(records)
            fd = f.fileno()
        if sync and self.sync:
            os.fsync(fd)

    def size(self) -> int:
        return self._size

    def compact(self, checkpoint_lsn: int) -> None:
        """Replace the log by one checkpoint record. The caller has flushed every store."""
        with self._lock:
            atomic_write(self.path, MAGIC + _frame({"t": "checkpoint", "lsn": checkpoint_lsn}), sync=self.sync)
            if self._file is not None:
                self._file.close()
                self._file = None
            self._size = os.path.getsize(self.path)
            self.records_since_checkpoint = 1

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


class MemoryLog(CoordinatorLog):
    """A coordinator log kept in memory: the protocol runs, nothing survives the process."""

    durable = False

    def __init__(self) -> None:
        super().__init__(os.devnull, sync=False)

    def scan(self) -> LogScan:
        return LogScan()

    def append(self, records: Iterable[dict[str, Any]], *, sync: bool) -> None:
        with self._lock:
            self.records_since_checkpoint += len(list(records))

    def compact(self, checkpoint_lsn: int) -> None:
        with self._lock:
            self.records_since_checkpoint = 0

    def close(self) -> None:
        pass
