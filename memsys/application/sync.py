"""SyncManager: keep stores consistent: write-through, a durable update queue, conflicts, anti-entropy.

    sync = SyncManager(manager, queue_path="data/sync.queue")          # conflict log: data/sync.queue.conflicts
    sync.write_through(item, "lmdb", ["duckdb", "chroma"])              # source, then every replica, now
    sync.queue_update("duckdb", item); sync.start()                     # later, in a background worker
    sync.sync("lmdb", "duckdb"); sync.repair()                          # anti-entropy by digests
    sync.conflicts()                                                    # every conflict met, and its resolution
    sync.close()

Versions decide: every committed write carries its commit LSN as its version, so for one id
the larger version is the newer write. Copies keep the source's version (a replay, not a new
write), so syncing twice changes nothing the second time, and a store's version of an id never
goes down: an older write that wins by strategy is written one version above what it replaces.

Conflicts. Delivering an item to a store that holds a different item of the same id at the same
version, or a newer version the update did not know (a concurrent write), is a conflict. It is
resolved by the strategy (``policy``): "newest" (higher version, then later updated_at, then the
source), "source" (the incoming write wins), "skip" (leave the store as it is), or a caller's
``resolver(incoming, current) -> MemoryItem`` (a merge is written one version above both; the
resolver must be deterministic, since a redelivered update may be resolved again). Every
conflict and its resolution is appended to the conflict log (``conflict_log``; a FramedLog file,
kept across restarts) and read back by ``conflicts()``.

The queue. ``queue_update`` returns once the update is in the queue file (fsynced), so a crash
or SIGKILL after it loses nothing; a new SyncManager on the same ``queue_path`` finds every
update not yet marked done. Updates to one (store, id) are applied in the order queued (a later
update supersedes an earlier one still waiting); a redelivered update the store already holds
is recognised and not applied again. A store that fails transiently keeps its updates queued
(retried with backoff, later updates of the same id wait behind them); an update refused for
good (bad input, unsupported) is recorded as failed in the file and listed in
``failed_updates``. ``start()`` runs a background worker; ``stop()`` drains the queue (up to a
timeout) and joins it. One SyncManager at a time owns a queue file (PathLock).

Anti-entropy. ``diff`` / ``sync`` / ``repair`` compare stores by digests (``digests.py``): each
store's ``DigestIndex`` is built by one scan the first time it is needed and then kept current
from the manager's commits, so a comparison compares range digests and reads only the ids that
differ, whatever the stores' size. Writes that reach a store without passing through this
manager are not seen by its index: ``refresh_digests()`` (or ``rescan=True``) rebuilds it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from memsys.application.digests import DEFAULT_BUCKETS, DigestIndex, canonical, check_buckets, compare
from memsys.domain.errors import (
    CommitIncompleteError,
    ConflictError,
    CorruptStoreError,
    InvalidInputError,
    MemsysError,
    TransactionAbortedError,
)
from memsys.domain.model import MAX_VERSION, MemoryItem
from memsys.durable import FramedLog, PathLock

if TYPE_CHECKING:
    from memsys.application.manager import MemoryManager

log = logging.getLogger("memsys.sync")

POLICIES = ("newest", "source", "skip")
Resolver = Callable[[MemoryItem, MemoryItem], MemoryItem]


@dataclasses.dataclass
class SyncReport:
    source: str
    target: str
    missing: list[str] = dataclasses.field(default_factory=list)      # in source, not in target
    stale: list[str] = dataclasses.field(default_factory=list)        # target holds an older version
    newer_in_target: list[str] = dataclasses.field(default_factory=list)
    conflicts: list[str] = dataclasses.field(default_factory=list)    # same version, different content
    extra: list[str] = dataclasses.field(default_factory=list)        # in target, not in source
    copied: list[str] = dataclasses.field(default_factory=list)
    deleted: list[str] = dataclasses.field(default_factory=list)
    buckets: int = 0              # id ranges compared by digest
    differing_buckets: int = 0    # ranges whose digests differed
    items_read: int = 0           # items read from the two stores to confirm the differences

    @property
    def in_sync(self) -> bool:
        return not (self.missing or self.stale or self.conflicts or self.extra or self.newer_in_target)


@dataclasses.dataclass(frozen=True)
class Conflict:
    """One conflict met while delivering ``source``'s item to ``target``, and how it was resolved."""

    at: str                    # UTC time, ISO 8601
    id: str
    origin: str                # "queue", "write_through", "sync" or "repair"
    source: str
    target: str
    kind: str                  # "same_version" (different content) or "newer_in_target"
    source_version: int
    target_version: int
    strategy: str              # the policy, or "resolver"
    winner: str                # "source", "target", "merged" or "none" (skip)
    result_version: int | None  # the version the target holds afterwards
    source_item: dict[str, Any]
    target_item: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class _Entry:
    seq: int
    store: str
    item: MemoryItem
    attempts: int = 0
    not_before: float = 0.0


def _transient(exc: BaseException) -> bool:
    """Worth retrying: a transient error, a concurrent writer, or a transaction aborted by one."""
    if getattr(exc, "transient", False) or isinstance(exc, ConflictError):
        return True
    return isinstance(exc, TransactionAbortedError) and exc.__cause__ is not None and _transient(exc.__cause__)


def _same_write(a: MemoryItem, b: MemoryItem) -> bool:
    """Equal but for the version (a write that won by strategy is re-versioned above the old one)."""
    return canonical(a.replace(version=0)) == canonical(b.replace(version=0))


class ConflictLog:
    """The conflicts a SyncManager met: a FramedLog file at ``path`` (kept across restarts), or a
    list in memory when ``path`` is None."""

    KIND = "SYNC-CONFLICTS"

    def __init__(self, path: str | os.PathLike[str] | None) -> None:
        self.path = None if path is None else os.fspath(path)
        self._memory: list[Conflict] = []
        self._log = FramedLog(self.path, self.KIND) if self.path is not None else None
        self._lock = threading.Lock()
        self._path_lock = PathLock.acquire(self.path, owner="SyncManager conflict log") \
            if self.path is not None else None
        try:
            if self._log is not None:
                self._log.read()  # refuse a damaged file now, not at the first conflict
        except BaseException:
            self.close()
            raise

    def append(self, conflict: Conflict) -> None:
        with self._lock:
            if self._log is None:
                self._memory.append(conflict)
                return
            self._log.append([json.dumps(conflict.to_dict(), ensure_ascii=False).encode()], sync=True)

    def read(self) -> list[Conflict]:
        with self._lock:
            if self._log is None:
                return list(self._memory)
            records = []
            for offset, payload in self._log.read():
                try:
                    records.append(Conflict(**json.loads(payload)))
                except (ValueError, TypeError) as exc:
                    raise CorruptStoreError(f"{self.path}: conflict record at byte {offset} is unreadable: {exc}",
                                            path=self.path) from exc
            return records

    def close(self) -> None:
        if self._log is not None:
            self._log.close()
        lock, self._path_lock = self._path_lock, None
        if lock is not None:
            lock.release()


class SyncQueue:
    """The durable update queue: a FramedLog of ``put`` / ``done`` / ``failed`` records, or memory
    only when ``path`` is None. Pending entries are those put and neither done nor failed."""

    KIND = "SYNC-QUEUE"
    COMPACT_BYTES = 1 << 20

    def __init__(self, path: str | os.PathLike[str] | None) -> None:
        self.path = None if path is None else os.fspath(path)
        self._lock = threading.Lock()
        self.pending: dict[int, _Entry] = {}
        self.failed: dict[int, tuple[_Entry, str]] = {}
        self.seq = 0
        self.redelivered = 0  # entries found pending when the file was opened
        self._compacted = 0  # the file's size after the last compaction
        self._log: FramedLog | None = None
        self._path_lock: PathLock | None = None
        if self.path is None:
            return
        self._path_lock = PathLock.acquire(self.path, owner="SyncManager queue")
        try:
            self._log = FramedLog(self.path, self.KIND)
            self._load(self._log.read())
        except BaseException:
            self.close()
            raise
        self.redelivered = len(self.pending)

    def _load(self, records: list[tuple[int, bytes]]) -> None:
        for offset, payload in records:
            try:
                record = json.loads(payload)
                kind = record["t"]
                if kind == "put":
                    entry = _Entry(int(record["seq"]), record["store"], MemoryItem.from_dict(record["item"]))
                    self.pending[entry.seq] = entry
                    self.seq = max(self.seq, entry.seq)
                elif kind == "done":
                    for seq in record["seq"]:
                        self.pending.pop(int(seq), None)
                elif kind == "failed":
                    seq = int(record["seq"])
                    entry = self.pending.pop(seq, None) or _Entry(seq, record["store"],
                                                                   MemoryItem.from_dict(record["item"]))
                    self.failed[seq] = (entry, record["error"])
                    self.seq = max(self.seq, seq)
                else:
                    raise ValueError(f"unknown record type {kind!r}")
            except (ValueError, KeyError, TypeError, MemsysError) as exc:
                raise CorruptStoreError(f"{self.path}: queue record at byte {offset} is unreadable: {exc}",
                                        path=self.path) from exc

    def put(self, updates: Sequence[tuple[str, MemoryItem]]) -> list[int]:
        """Append updates; durable (fsynced) when this returns."""
        with self._lock:
            entries = [_Entry(self.seq + 1 + i, store, item) for i, (store, item) in enumerate(updates)]
            if self._log is not None and entries:
                self._log.append([json.dumps({"t": "put", "seq": e.seq, "store": e.store, "item": e.item.to_dict()},
                                             ensure_ascii=False).encode() for e in entries], sync=True)
            for e in entries:
                self.pending[e.seq] = e
            self.seq += len(entries)
            return [e.seq for e in entries]

    def done(self, seqs: Sequence[int]) -> None:
        """Mark entries applied. Not fsynced: a done mark lost to a power cut means a redelivery,
        which is recognised as already applied."""
        if not seqs:
            return
        with self._lock:
            if self._log is not None:
                self._log.append([json.dumps({"t": "done", "seq": list(seqs)}).encode()], sync=False)
            for seq in seqs:
                self.pending.pop(seq, None)
            self._maybe_compact()

    def fail(self, entry: _Entry, error: str) -> None:
        with self._lock:
            if self._log is not None:
                self._log.append([json.dumps({"t": "failed", "seq": entry.seq, "store": entry.store,
                                              "item": entry.item.to_dict(), "error": error},
                                             ensure_ascii=False).encode()], sync=True)
            self.pending.pop(entry.seq, None)
            self.failed[entry.seq] = (entry, error)

    def snapshot(self) -> list[_Entry]:
        with self._lock:
            return [self.pending[s] for s in sorted(self.pending)]

    def __len__(self) -> int:
        return len(self.pending)

    def _maybe_compact(self) -> None:
        """Rewrite the file with only what is still pending or failed, atomically, once it grows."""
        # Past a floor, compact when the file has doubled since the last compaction, so a long
        # queue is not rewritten at every done mark.
        if self._log is None or self._log.size < max(self.COMPACT_BYTES, 2 * self._compacted):
            return
        records = [json.dumps({"t": "put", "seq": e.seq, "store": e.store, "item": e.item.to_dict()},
                              ensure_ascii=False).encode() for _, e in sorted(self.pending.items())]
        records += [json.dumps({"t": "failed", "seq": e.seq, "store": e.store, "item": e.item.to_dict(),
                                "error": why}, ensure_ascii=False).encode()
                    for _, (e, why) in sorted(self.failed.items())]
        try:
            self._log.rewrite(records, sync=True)
            self._compacted = self._log.size
        except MemsysError:
            log.warning("compacting the sync queue %s failed; it keeps every record", self.path, exc_info=True)

    def close(self) -> None:
        if self._log is not None:
            self._log.close()
        lock, self._path_lock = self._path_lock, None
        if lock is not None:
            lock.release()


class SyncManager:
    def __init__(self, manager: MemoryManager, *, policy: str = "newest", resolver: Resolver | None = None,
                 queue_path: str | os.PathLike[str] | None = None,
                 conflict_log: str | os.PathLike[str] | None = None, buckets: int = DEFAULT_BUCKETS,
                 retry_delay: float = 0.05, max_retry_delay: float = 5.0) -> None:
        if resolver is not None and not callable(resolver):
            raise InvalidInputError(f"resolver must be callable(incoming, current) -> MemoryItem, got {resolver!r}")
        if resolver is None and policy not in POLICIES:
            raise InvalidInputError(f"unknown conflict policy {policy!r}; use one of {POLICIES}, or a resolver")
        if not (retry_delay >= 0 and max_retry_delay >= retry_delay):
            raise InvalidInputError("retry_delay must be >= 0 and max_retry_delay >= retry_delay")
        self.manager = manager
        self.policy = "resolver" if resolver is not None else policy
        self.resolver = resolver
        self.buckets = check_buckets(buckets)
        self.retry_delay = retry_delay
        self.max_retry_delay = max_retry_delay
        if conflict_log is None and queue_path is not None:
            conflict_log = os.fspath(queue_path) + ".conflicts"
        self._queue = SyncQueue(queue_path)
        try:
            self._conflicts = ConflictLog(conflict_log)
        except BaseException:
            self._queue.close()
            raise
        self._indexes: dict[str, DigestIndex] = {}
        self._building: dict[str, list[list[Any]]] = {}
        self._generation: dict[str, int] = {}  # commits seen per store
        self._index_lock = threading.Lock()    # one build at a time
        self._commit_lock = threading.Lock()   # commit listener vs. registering an index
        self._process_lock = threading.Lock()
        self._wake = threading.Condition()
        self._stopping = False
        self._worker: threading.Thread | None = None
        self._closed = False
        manager.coordinator.listeners.append(self._on_commit)
        manager.register_queue("sync", self.queue_depth)  # stats() and the metrics show its depth

    # --- digests

    def _on_commit(self, by_store: dict[str, list[Any]]) -> None:
        with self._commit_lock:
            for name, ops in by_store.items():
                self._generation[name] = self._generation.get(name, 0) + 1
                index = self._indexes.get(name)
                if index is not None:
                    index.apply(ops)
                elif name in self._building:
                    self._building[name].append(list(ops))

    def digest_index(self, store: str, *, rescan: bool = False) -> DigestIndex:
        """The store's digest index: built by one scan the first time (or with ``rescan``), then
        kept current from this manager's commits."""
        adapter = self.manager._adapter(store)
        with self._index_lock:
            index = None if rescan else self._indexes.get(store)
            if index is not None:
                return index
            # Commits made while the scan runs are kept and applied again after it, in commit
            # order: the scan may or may not hold them, and the last write of an id decides.
            with self._commit_lock:
                self._indexes.pop(store, None)
                self._building[store] = []
            index = DigestIndex(self.buckets)
            try:
                index.put_many(adapter.iter_items())
            except BaseException:
                with self._commit_lock:
                    self._building.pop(store, None)
                raise
            with self._commit_lock:
                for ops in self._building.pop(store):
                    index.apply(ops)
                self._indexes[store] = index
            return index

    def refresh_digests(self, stores: Sequence[str] | None = None) -> None:
        """Rebuild the digest indexes of ``stores`` (default: those built) by a scan: after writes
        that did not pass through this manager."""
        for name in list(stores if stores is not None else self._indexes):
            self.digest_index(name, rescan=True)

    def _read(self, store: str, ids: Sequence[str]) -> dict[str, MemoryItem]:
        if not ids:
            return {}
        generation = self._generation.get(store, 0)
        found = self.manager._adapter(store).retrieve_many(list(ids))
        with self._commit_lock:
            index = self._indexes.get(store)
            # What was read is the truth: correct the index where it drifted, unless a commit to
            # the store came in meanwhile (the read may then be older than the index).
            if index is not None and self._generation.get(store, 0) == generation:
                for item_id in ids:
                    item = found.get(item_id)
                    if item is None:
                        index.discard(item_id)
                    else:
                        index.put(item)
        return found

    def _differing(self, source: str, target: str, rescan: bool) -> tuple[list[str], int, int]:
        a, b = self.digest_index(source, rescan=rescan), self.digest_index(target, rescan=rescan)
        found = compare(a, b)
        return found.ids, found.buckets, found.differing_buckets

    def _compare(self, source: str, target: str, rescan: bool = False
                 ) -> tuple[SyncReport, dict[str, MemoryItem], dict[str, MemoryItem]]:
        ids, buckets, differing = self._differing(source, target, rescan)
        ours, theirs = self._read(source, ids), self._read(target, ids)
        report = SyncReport(source, target, buckets=buckets, differing_buckets=differing,
                            items_read=len(ours) + len(theirs))
        for item_id in ids:
            item, other = ours.get(item_id), theirs.get(item_id)
            if item is None and other is None:
                continue
            if other is None:
                report.missing.append(item_id)
            elif item is None:
                report.extra.append(item_id)
            elif other.version < item.version:
                report.stale.append(item_id)
            elif other.version > item.version:
                report.newer_in_target.append(item_id)
            elif canonical(other) != canonical(item):
                report.conflicts.append(item_id)
        for ids_ in (report.missing, report.stale, report.newer_in_target, report.conflicts, report.extra):
            ids_.sort()
        return report, ours, theirs

    def diff(self, source: str, target: str, *, rescan: bool = False) -> SyncReport:
        """How ``target`` differs from ``source``, by digests; changes nothing."""
        return self._compare(source, target, rescan)[0]

    def sync(self, source: str, target: str, *, delete_extra: bool = False, rescan: bool = False) -> SyncReport:
        """Bring ``target`` up to ``source``: copy what is missing or older, resolve same-version
        conflicts by the strategy (logged), and with ``delete_extra`` remove what ``source`` lacks,
        in one transaction per store."""
        report, ours, theirs = self._compare(source, target, rescan)
        copy = [ours[i] for i in report.missing + report.stale]
        back: list[MemoryItem] = []  # merges written to the source too, so both agree
        for item_id in report.conflicts:
            winner, item = self._resolve(ours[item_id], theirs[item_id], origin="sync", source=source, target=target,
                                         kind="same_version")
            if winner == "source":
                copy.append(ours[item_id])
            elif winner == "merged" and item is not None:
                copy.append(item)
                back.append(item)
        if copy:
            self.manager.write_versions(target, copy)
            report.copied = sorted(i.id for i in copy)
        if back:
            self.manager.write_versions(source, back)
        if delete_extra and report.extra:
            adapter = self.manager._adapter(target)
            with self.manager.with_transaction([target]):
                for item_id in report.extra:
                    adapter.delete(item_id)
            report.deleted = list(report.extra)
        return report

    def repair(self, stores: Sequence[str] | None = None, *, rescan: bool = False) -> dict[str, list[str]]:
        """Give every store the newest version (then the later updated_at) of every id any of them
        holds; returns the ids copied per store. Only ids whose digests differ between stores are read."""
        names = list(stores or self.manager.adapters)
        if not names:
            return {}
        ids: set[str] = set()
        for name in names[1:]:
            ids.update(self._differing(names[0], name, rescan)[0])
        ordered = sorted(ids)
        contents = {name: self._read(name, ordered) for name in names}
        copied: dict[str, list[str]] = {name: [] for name in names}
        behind: dict[str, list[MemoryItem]] = {name: [] for name in names}
        for item_id in ordered:
            held = {n: contents[n][item_id] for n in names if item_id in contents[n]}
            if not held:
                continue
            best_name = max(held, key=lambda n: (held[n].version, held[n].updated_at))
            best = held[best_name]
            for name in names:
                current = held.get(name)
                if current is None or current.version < best.version:
                    behind[name].append(best)
                elif canonical(current) != canonical(best):  # same version, different content
                    self._log_conflict(best, current, origin="repair", source=best_name, target=name,
                                       kind="same_version", winner="source", result=best.version)
                    behind[name].append(best)
        for name in names:
            if behind[name]:
                self.manager.write_versions(name, behind[name])
            copied[name] = sorted(i.id for i in behind[name])
        return copied

    # --- conflicts

    def _resolve(self, incoming: MemoryItem, current: MemoryItem, *, origin: str, source: str, target: str,
                 kind: str) -> tuple[str, MemoryItem | None]:
        """(winner, item to write or None) for a conflict, logged."""
        winner: str
        item: MemoryItem | None
        if self.policy == "skip":
            winner, item = "none", None
        elif self.policy == "source":
            winner, item = "source", incoming
        elif self.policy == "newest":
            newer = (incoming.version, incoming.updated_at) >= (current.version, current.updated_at)
            winner, item = ("source", incoming) if newer else ("target", None)
        else:
            resolved = self.resolver(incoming, current)  # type: ignore[misc]
            if not isinstance(resolved, MemoryItem) or resolved.id != incoming.id:
                raise InvalidInputError(f"the conflict resolver must return a MemoryItem with id {incoming.id!r}, "
                                        f"got {resolved!r}")
            if _same_write(resolved, current):
                winner, item = "target", None
            elif _same_write(resolved, incoming) and resolved.version >= current.version:
                winner, item = "source", incoming
            else:
                top = max(incoming.version, current.version, resolved.version)
                winner, item = "merged", resolved.replace(version=min(top + 1, MAX_VERSION))
        if item is not None and item.version < current.version:
            item = item.replace(version=min(current.version + 1, MAX_VERSION))  # a store never goes back
        self._log_conflict(incoming, current, origin=origin, source=source, target=target, kind=kind,
                           winner=winner, result=current.version if item is None else item.version)
        return winner, item

    def _log_conflict(self, incoming: MemoryItem, current: MemoryItem, *, origin: str, source: str, target: str,
                      kind: str, winner: str, result: int | None) -> None:
        conflict = Conflict(at=datetime.now(timezone.utc).isoformat(), id=incoming.id, origin=origin, source=source,
                            target=target, kind=kind, source_version=incoming.version,
                            target_version=current.version, strategy=self.policy, winner=winner,
                            result_version=result, source_item=dict(incoming.to_dict()),
                            target_item=dict(current.to_dict()))
        self._conflicts.append(conflict)
        log.info("sync conflict on %s (%s, %s -> %s): %s wins", incoming.id, kind, source, target, winner)

    def conflicts(self) -> list[Conflict]:
        """Every conflict this SyncManager (and earlier ones on the same conflict log) met, oldest first."""
        return self._conflicts.read()

    # --- delivery (write-through and the queue)

    def _deliver(self, target: str, items: Sequence[MemoryItem], *, origin: str, source: str) -> list[str]:
        """Write ``items`` (one per id) to ``target`` unless it already holds them or a conflict says
        otherwise; one transaction. Returns the ids written."""
        current = self.manager._adapter(target).retrieve_many([i.id for i in items])
        writes = []
        for item in items:
            held = current.get(item.id)
            if held is None or held.version < item.version:
                writes.append(item)
            elif _same_write(held, item):
                continue  # already applied (a redelivery, or a winner re-versioned above an old write)
            else:
                kind = "same_version" if held.version == item.version else "newer_in_target"
                _winner, resolved = self._resolve(item, held, origin=origin, source=source, target=target, kind=kind)
                if resolved is not None:
                    writes.append(resolved)
        if writes:
            try:
                self.manager.write_versions(target, writes)
            except CommitIncompleteError as exc:  # committed: the log holds it, recovery completes the store
                log.warning("sync to %s committed, not yet applied (recovery completes it): %s", target, exc)
        return [i.id for i in writes]

    def write_through(self, item: MemoryItem, source: str, targets: Sequence[str] | None = None) -> MemoryItem:
        """Store ``item`` in ``source`` (a committed, version-stamped write), then deliver that version
        to every target before returning. A target that fails has the update queued (durably, with a
        ``queue_path``) instead, so the write is never lost; returns the committed item."""
        if not isinstance(item, MemoryItem):
            raise InvalidInputError(f"write_through takes a MemoryItem, got {type(item).__name__}")
        names = [t for t in (targets if targets is not None else self.manager.adapters) if t != source]
        for name in names:
            self.manager._adapter(name)
        with self.manager.with_transaction([source]):
            self.manager._adapter(source).store(item)
        committed = self.manager._adapter(source).retrieve(item.id) or item
        for name in names:
            try:
                self._deliver(name, [committed], origin="write_through", source=source)
            except MemsysError as exc:
                if not _transient(exc):
                    raise
                log.warning("write-through of %s to %s failed (%s); queued", item.id, name, exc)
                self._queue.put([(name, committed)])
                self._notify_worker()
        return committed

    def queue_update(self, store: str, item: MemoryItem) -> int:
        """Queue ``item`` for ``store``; durable when this returns (with a ``queue_path``). Returns its
        sequence number."""
        return self.queue_updates([(store, item)])[0]

    def queue_updates(self, updates: Iterable[tuple[str, MemoryItem]]) -> list[int]:
        """Queue several updates with one fsync, in order."""
        updates = list(updates)
        for store, item in updates:
            self.manager._adapter(store)
            if not isinstance(item, MemoryItem):
                raise InvalidInputError(f"queue_update takes a MemoryItem, got {type(item).__name__}")
        seqs = self._queue.put(updates)
        self._notify_worker()
        return seqs

    def queue_depth(self) -> int:
        """Updates queued and not yet applied (nor failed for good)."""
        return len(self._queue)

    def pending(self) -> list[tuple[int, str, str, int]]:
        """(seq, store, id, version) of every queued update, in queue order."""
        return [(e.seq, e.store, e.item.id, e.item.version) for e in self._queue.snapshot()]

    @property
    def failed_updates(self) -> list[tuple[str, str, str]]:
        """(store, id, error) of updates refused for good, kept in the queue file."""
        return [(e.store, e.item.id, why) for _, (e, why) in sorted(self._queue.failed.items())]

    @property
    def redelivered(self) -> int:
        """Updates found waiting in the queue file when this SyncManager opened it."""
        return self._queue.redelivered

    def process_queue(self) -> int:
        """Apply every queued update that can be applied now; returns how many were written.
        Updates of a store that fails transiently stay queued (see ``queue_depth``)."""
        written = 0
        with self._process_lock:
            now = time.monotonic()
            entries = self._queue.snapshot()
            latest: dict[tuple[str, str], _Entry] = {}
            superseded: list[int] = []
            for entry in entries:
                key = (entry.store, entry.item.id)
                earlier = latest.get(key)
                if earlier is not None:
                    superseded.append(earlier.seq)
                    # The later update replaces it, and waits out its retry delay (order per id).
                    entry.attempts = max(entry.attempts, earlier.attempts)
                    entry.not_before = max(entry.not_before, earlier.not_before)
                latest[key] = entry
            waiting = {k for k, e in latest.items() if e.not_before > now}
            self._queue.done(superseded)
            by_store: dict[str, list[_Entry]] = {}
            for key, entry in latest.items():
                if key not in waiting:
                    by_store.setdefault(entry.store, []).append(entry)
            for store, batch in by_store.items():
                try:
                    written += len(self._deliver(store, [e.item for e in batch], origin="queue", source="queue"))
                except MemsysError as exc:
                    self._deferred(store, batch, exc)
                    continue
                self._queue.done([e.seq for e in batch])
        return written

    def _deferred(self, store: str, batch: list[_Entry], exc: MemsysError) -> None:
        if _transient(exc):
            for entry in batch:
                entry.attempts += 1
                entry.not_before = time.monotonic() + min(self.max_retry_delay,
                                                          self.retry_delay * 2 ** (entry.attempts - 1))
            log.info("sync queue: %d updates for %s deferred: %s", len(batch), store, exc)
            return
        if len(batch) > 1:  # find the one the store refuses; the others go through
            for entry in batch:
                try:
                    self._deliver(store, [entry.item], origin="queue", source="queue")
                except MemsysError as one:
                    if _transient(one):
                        self._deferred(store, [entry], one)
                    else:
                        self._refuse(entry, one)
                    continue
                self._queue.done([entry.seq])
            return
        self._refuse(batch[0], exc)

    def _refuse(self, entry: _Entry, exc: MemsysError) -> None:
        log.error("sync queue: update of %s for %s refused for good: %s", entry.item.id, entry.store, exc)
        self._queue.fail(entry, f"{type(exc).__name__}: {exc}")

    # --- the background worker

    def _notify_worker(self) -> None:
        with self._wake:
            self._wake.notify_all()

    def start(self) -> None:
        """Apply queued updates in a background thread until ``stop()``."""
        if self._closed:
            raise InvalidInputError("this SyncManager is closed")
        if self._worker is None:
            self._stopping = False
            self._worker = threading.Thread(target=self._run, name="memsys-sync", daemon=True)
            self._worker.start()

    def _run(self) -> None:
        while True:
            with self._wake:
                if self._stopping:
                    return
            try:
                self.process_queue()
            except Exception:  # the worker must outlive any one failure; the queue keeps the update
                log.exception("sync worker: processing the queue failed")
            with self._wake:
                if self._stopping:
                    return
                entries = self._queue.snapshot()
                if not entries:
                    self._wake.wait()
                else:
                    delay = min(e.not_before for e in entries) - time.monotonic()
                    self._wake.wait(timeout=min(max(delay, 0.005), self.max_retry_delay))

    def stop(self, *, drain: bool = True, timeout: float = 30.0) -> bool:
        """Stop the worker. With ``drain``, first apply what is queued (up to ``timeout`` seconds:
        a store that keeps failing leaves its updates queued). True when the queue is empty."""
        worker = self._worker
        if worker is None:
            if drain:
                self.process_queue()
            return self.queue_depth() == 0
        deadline = time.monotonic() + timeout
        if drain:
            while self.queue_depth() and time.monotonic() < deadline:
                self._notify_worker()
                time.sleep(0.005)
        with self._wake:
            self._stopping = True
            self._wake.notify_all()
        worker.join(timeout=max(0.0, deadline - time.monotonic()) + 5.0)
        if worker.is_alive():
            log.warning("the sync worker did not stop in time (a store call is hanging)")
        self._worker = None
        return self.queue_depth() == 0

    def close(self) -> None:
        """Stop the worker (without draining), release the queue file and the conflict log."""
        if self._closed:
            return
        self.stop(drain=False)
        self._closed = True
        try:
            self.manager.coordinator.listeners.remove(self._on_commit)
        except ValueError:
            pass
        self._queue.close()
        self._conflicts.close()

    def __enter__(self) -> SyncManager:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


__all__ = ["Conflict", "ConflictLog", "POLICIES", "SyncManager", "SyncQueue", "SyncReport"]
