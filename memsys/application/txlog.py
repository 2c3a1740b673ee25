"""The durable coordinator log of cross-store transactions, and its dead-letter file.

One append-only file of checksummed records (``memsys.durable.FramedLog``, the
framing every memsys log uses):

    prepare     {"t": "prepare", "lsn", "txid", "stores"}    written, not synced
    commit      {"t": "commit", "lsn", "txid", "ops": {store: [op, ...]}, "ts"}
                the decision, with the whole write set; fsynced before any store applies it
    end         {"t": "end", "lsns": [...]}                  every store applied; not synced
    checkpoint  {"t": "checkpoint", "lsn"}                   first record after compaction:
                everything up to lsn is durable in the stores, except the commits that
                follow it with an lsn <= its own ("carried": a store has not applied them)

Commit records of concurrent transactions are appended together and synced
once (group commit). Recovery redoes every commit after the last checkpoint
(and every carried one), in LSN order (stores may apply without syncing, so an
"end" proves only that a store saw the write, not that it kept it through a
power loss); a prepare without a commit is presumed aborted. Compaction, after
every store has been flushed, replaces the file with a checkpoint followed by
the commits some store still lacks (a quarantined store, or one the manager
does not have), so the log does not grow without bound and never forgets a
write a store has not applied.

An append is all or nothing: a failed write or fsync (a full disk) cuts the file
back to its last intact record, durably, so no record of a transaction whose call
raised can be redone later. If even that fails, the log takes no more commits
until the cut succeeds (tried again before every append) or the log is compacted.

Operations a store refuses for good at apply (``Coordinator`` isolates them)
go to the dead-letter file beside the log, ``<log>.dead-letters``: framed,
fsynced records {id, store, txid, lsn, op, error, time}, kept until an
operator retries or discards them.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import os
import threading
from collections.abc import Iterable, Sequence
from typing import Any

from memsys.domain.errors import CorruptStoreError, InvalidInputError, StoreClosedError, StoreError
from memsys.durable import FramedLog, PathLock, log_magic

log = logging.getLogger("memsys.txlog")

TXLOG_KIND = "TXLOG"
DEAD_LETTER_KIND = "DEADLETTERS"
#: The magic of version-1 coordinator logs (still read; rewritten in the current format on first append).
MAGIC = log_magic(TXLOG_KIND, 1)


def check_file_path(path: Any, what: str) -> str:
    """``path`` as a str if it can name a log file; InvalidInputError naming it otherwise."""
    if isinstance(path, bytes) or not isinstance(path, (str, os.PathLike)):
        raise InvalidInputError(f"{what} must be a file path (str or os.PathLike), got {type(path).__name__}")
    text = os.fspath(path)
    if not isinstance(text, str) or not text or "\0" in text:
        raise InvalidInputError(f"{what} must be a non-empty file path, got {path!r}")
    if os.path.isdir(text):
        raise InvalidInputError(f"{what} {text!r} is a folder; a log is a file: pass a path inside it, "
                                f"e.g. {os.path.join(text, 'txlog')!r}")
    if os.path.lexists(text) and not os.path.isfile(text):
        raise InvalidInputError(f"{what} {text!r} exists and is not a regular file")
    ancestor = os.path.dirname(os.path.abspath(text))
    while not os.path.exists(ancestor) and os.path.dirname(ancestor) != ancestor:
        ancestor = os.path.dirname(ancestor)
    if not os.path.isdir(ancestor):
        raise InvalidInputError(f"{what} {text!r} cannot be created: {ancestor!r} is a file, not a folder")
    return text


def dead_letter_path(log_path: str | os.PathLike[str]) -> str:
    """Where the dead letters of the coordinator log at ``log_path`` are kept."""
    return os.fspath(log_path) + ".dead-letters"


def _encode(record: dict[str, Any]) -> bytes:
    return json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode()


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


# ---------------------------------------------------------------------------------------- dead letters


@dataclasses.dataclass(frozen=True)
class DeadLetter:
    """One committed operation a store refused for good, set aside for an operator.

    ``id`` is ``store/lsn/index`` (the operation's place in its commit record), so the same
    operation is never dead-lettered twice. ``op`` is the logged operation (as in the log).
    """

    id: str
    store: str
    txid: str
    lsn: int
    op: dict[str, Any]
    error: str
    time: float

    @property
    def kind(self) -> str:
        return str(self.op.get("op"))

    @property
    def item_id(self) -> str | None:
        item = self.op.get("item")
        if isinstance(item, dict):
            return item.get("id")
        return self.op.get("id") or self.op.get("source")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, record: Any, *, where: str = "dead letter") -> DeadLetter:
        try:
            return cls(id=str(record["id"]), store=str(record["store"]), txid=str(record["txid"]),
                       lsn=int(record["lsn"]), op=dict(record["op"]), error=str(record["error"]),
                       time=float(record["time"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise CorruptStoreError(f"{where} is not a dead-letter record: {type(exc).__name__}: {exc}") from exc

    def describe(self) -> str:
        when = datetime.datetime.fromtimestamp(self.time, datetime.timezone.utc).isoformat(timespec="seconds")
        return (f"{self.id}: {self.kind} {self.item_id!r} on store {self.store!r} (transaction {self.txid}, "
                f"lsn {self.lsn}, {when}): {self.error}")


class DeadLetterBox:
    """The dead letters of one log: a framed, fsynced file (``path``), or memory (``path=None``)."""

    def __init__(self, path: str | None, *, sync: bool = True) -> None:
        self.path = path
        self.sync = sync
        self._lock = threading.Lock()
        self._file = FramedLog(path, DEAD_LETTER_KIND) if path is not None else None
        self._letters: dict[str, DeadLetter] | None = None if path is not None else {}

    def _load(self) -> dict[str, DeadLetter]:
        if self._letters is None:
            assert self._file is not None
            letters: dict[str, DeadLetter] = {}
            for offset, payload in self._file.read():
                try:
                    record = json.loads(payload)
                except ValueError as exc:
                    raise CorruptStoreError(f"{self.path}: record at byte {offset} is not JSON",
                                            path=self.path) from exc
                letter = DeadLetter.from_dict(record, where=f"{self.path}: record at byte {offset}")
                letters[letter.id] = letter
            self._letters = letters
        return self._letters

    def list(self, store: str | None = None) -> list[DeadLetter]:
        """The dead letters waiting for an operator, oldest first."""
        with self._lock:
            letters = [d for d in self._load().values() if store is None or d.store == store]
        return sorted(letters, key=lambda d: (d.lsn, d.id))

    def ids(self, store: str | None = None) -> set[str]:
        return {d.id for d in self.list(store)}

    def add(self, letters: Sequence[DeadLetter]) -> list[DeadLetter]:
        """Record ``letters`` durably (fsynced before this returns); returns those not already there."""
        with self._lock:
            current = self._load()
            new = [d for d in letters if d.id not in current]
            if new and self._file is not None:
                self._file.append([_encode(d.to_dict()) for d in new], sync=self.sync)
            for d in new:
                current[d.id] = d
        return new

    def remove(self, ids: Iterable[str]) -> list[DeadLetter]:
        """Forget the letters ``ids`` (retried or discarded); rewrites the file atomically."""
        wanted = set(ids)
        with self._lock:
            current = self._load()
            gone = [current[i] for i in sorted(wanted) if i in current]
            if not gone:
                return []
            remaining = [d for d in current.values() if d.id not in wanted]
            if self._file is not None:
                self._file.rewrite([_encode(d.to_dict()) for d in remaining], sync=self.sync)
            for d in gone:
                del current[d.id]
        return gone

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


def read_dead_letters(log_path: str | os.PathLike[str]) -> list[DeadLetter]:
    """The dead letters beside the coordinator log at ``log_path``, read without opening any store."""
    path = check_file_path(log_path, "log")
    box = DeadLetterBox(dead_letter_path(path))
    try:
        return box.list()
    finally:
        box.close()


# ---------------------------------------------------------------------------------------- the log


class CoordinatorLog:
    """The file, its group appends, its scan and its compaction. Thread-safe.

    Constructing one opens nothing; ``lock(owner)`` takes the OS lock that keeps a second
    manager off the log (and its dead-letter file) until ``close()``.
    """

    durable = True

    def __init__(self, path: str | os.PathLike[str], *, sync: bool = True) -> None:
        self._setup(check_file_path(path, "transaction_log"), sync)
        self._file: FramedLog | None = FramedLog(self.path, TXLOG_KIND)
        self.dead_letters = DeadLetterBox(dead_letter_path(self.path), sync=sync)

    def _setup(self, path: str, sync: bool) -> None:
        self.path = path
        self.sync = sync
        self._lock = threading.Lock()
        self._ended_lock = threading.Lock()
        self._ended: list[int] = []  # end records waiting to ride along with the next append
        self._broken: str | None = None  # why the file may hold bytes of a failed append
        self._closed = False
        self._locks: list[PathLock] = []
        self._base_size = 0  # the checkpoint and the records carried with it
        self.records_since_checkpoint = 0

    # --- ownership

    def lock(self, owner: str) -> None:
        """Hold an OS lock on the log until ``close()``: another holder gets StoreLockedError."""
        self.hold(PathLock.acquire(self.path, owner=owner))

    def hold(self, lock: PathLock) -> None:
        """Release ``lock`` with this log (a process that drops its log drops its locks)."""
        self._locks.append(lock)

    # --- reading

    def scan(self) -> LogScan:
        """Read the whole log. A torn last record is ignored (it was never acknowledged);
        damage before it raises CorruptStoreError naming the file and offset."""
        assert self._file is not None
        result = LogScan()
        with self._lock:
            frames = self._file.read()
            size = self._file.size
        ends = [offset for offset, _ in frames[1:]] + [size]
        carrying = False
        counted = 0
        base = 0
        for (offset, payload), end in zip(frames, ends):
            try:
                record = json.loads(payload)
                kind = record.get("t")
                lsn = int(record.get("lsn", 0))
                if kind == "checkpoint":
                    result.checkpoint_lsn = lsn
                    result.commits = [c for c in result.commits if c["lsn"] > lsn]
                    carrying, counted, base = True, 0, end
                elif kind == "commit":
                    commit = {"lsn": lsn, "txid": str(record["txid"]), "ops": dict(record["ops"])}
                    result.commits.append(commit)
                    if carrying and lsn <= result.checkpoint_lsn:
                        base = end  # carried by compaction: not growth since the checkpoint
                        counted -= 1
                    else:
                        carrying = False
                elif kind == "end":
                    result.ended.update(int(x) for x in record["lsns"])
                    carrying = False
                elif kind == "prepare":
                    result.prepared[lsn] = record
                    carrying = False
                else:
                    raise CorruptStoreError(f"{self.path}: record at byte {offset} has unknown type {kind!r}",
                                            path=self.path)
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                raise CorruptStoreError(f"{self.path}: record at byte {offset} is unreadable: "
                                        f"{type(exc).__name__}: {exc}", path=self.path) from exc
            result.records += 1
            counted += 1
            result.max_lsn = max(result.max_lsn, lsn)
        result.torn_tail = size < self._disk_size()
        result.commits.sort(key=lambda c: c["lsn"])
        self.records_since_checkpoint = counted
        self._base_size = base
        return result

    def _disk_size(self) -> int:
        try:
            return os.path.getsize(self.path)
        except OSError:
            return 0

    # --- writing

    def append(self, records: Iterable[dict[str, Any]], *, sync: bool) -> None:
        """Append records in one write, all or nothing; fsync when ``sync`` (the decision records).

        A failure raises the memsys error for it (DiskFullError on a full disk) with the file
        cut back, durably, to its last intact record: nothing of these records can be redone.
        """
        assert self._file is not None
        payloads = [_encode(r) for r in records]
        if not payloads:
            return
        with self._lock:
            self._check_writable()
            with self._ended_lock:
                ended, self._ended = self._ended, []
            if ended:
                payloads.insert(0, _encode({"t": "end", "lsns": ended}))
            try:
                self._file.append(payloads, sync=sync and self.sync)
            except BaseException:
                self._seal()
                raise
            self.records_since_checkpoint += len(payloads)

    def note_ended(self, lsns: Sequence[int]) -> None:
        """Record that every store applied ``lsns``; written with the next append (an end record
        only spares recovery some work, so it never waits for a log sync in progress)."""
        with self._ended_lock:
            self._ended.extend(lsns)

    def _check_writable(self) -> None:
        if self._closed:
            raise StoreClosedError(f"the coordinator log {self.path} is closed")
        if self._broken is not None:
            self._seal()
            if self._broken is not None:
                raise StoreError(f"the coordinator log {self.path} may still hold part of a failed write that "
                                 f"could not be cut off ({self._broken}); it takes no commits until that "
                                 "succeeds (tried again at every commit)")

    def _seal(self) -> None:
        """After a failed append: make sure the file ends, on disk, at its last intact record.

        FramedLog already cut it back (or will before its next append); this also fsyncs the cut,
        so a power loss cannot bring back commit records of a transaction that was told it failed.
        """
        assert self._file is not None
        end = self._file.size
        try:
            fd = os.open(self.path, os.O_RDWR)
        except FileNotFoundError:
            self._broken = None
            return
        except OSError as exc:
            self._broken = f"{type(exc).__name__}: {exc}"
            return
        try:
            if os.fstat(fd).st_size > end:
                os.ftruncate(fd, end)
            if self.sync:
                os.fsync(fd)
        except OSError as exc:
            self._broken = f"{type(exc).__name__}: {exc}"
            log.error("coordinator log %s: cutting off a failed write failed (%s); no commits until it succeeds",
                      self.path, exc)
        else:
            self._broken = None
        finally:
            os.close(fd)

    def size(self) -> int:
        return self._file.size if self._file is not None else 0

    def growth(self) -> int:
        """Bytes appended since the last checkpoint (and the records it carried)."""
        return max(0, self.size() - self._base_size)

    def compact(self, checkpoint_lsn: int, carry: Sequence[dict[str, Any]] = ()) -> None:
        """Replace the log by a checkpoint and the ``carry`` commits (those some store still lacks).

        The caller has flushed every store. The file is replaced atomically: a failure (a full
        disk) raises and leaves the log as it was.
        """
        assert self._file is not None
        payloads = [_encode({"t": "checkpoint", "lsn": checkpoint_lsn})] + [_encode(dict(c)) for c in carry]
        with self._lock:
            if self._closed:
                raise StoreClosedError(f"the coordinator log {self.path} is closed")
            self._file.rewrite(payloads, sync=self.sync)
            self._broken = None  # whatever a failed append left went with the old file
            with self._ended_lock:
                self._ended = []
            self._base_size = self._file.size
            self.records_since_checkpoint = 0

    def close(self) -> None:
        """Close the file and release the locks. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                if self._broken is not None:
                    self._seal()  # a last chance to cut off a failed write before the next open reads it
                if self._file is not None:
                    self._file.close()
                self.dead_letters.close()
            finally:
                locks, self._locks = self._locks, []
                for lock in locks:
                    lock.release()


class MemoryLog(CoordinatorLog):
    """A coordinator log kept in memory: the protocol runs, nothing survives the process.

    Dead letters are kept in memory too; the coordinator keeps a quarantined store's
    unapplied operations in memory, so ``recover()`` can still complete it.
    """

    durable = False

    def __init__(self) -> None:
        self._setup(os.devnull, False)
        self._file = None
        self.dead_letters = DeadLetterBox(None)

    def scan(self) -> LogScan:
        return LogScan()

    def append(self, records: Iterable[dict[str, Any]], *, sync: bool) -> None:
        with self._lock:
            if self._closed:
                raise StoreClosedError("the manager's in-memory coordinator log is closed")
            self.records_since_checkpoint += len(list(records))

    def note_ended(self, lsns: Sequence[int]) -> None:
        pass

    def compact(self, checkpoint_lsn: int, carry: Sequence[dict[str, Any]] = ()) -> None:
        with self._lock:
            self.records_since_checkpoint = 0
