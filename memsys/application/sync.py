"""SyncManager: keep stores consistent: find drift, copy newer versions, repair.

Versions decide: every committed write carries its commit LSN as its version,
so for one id the larger version is the newer write. Copies keep the source's
version (a replay, not a new write), so syncing twice changes nothing the
second time. Items with the same version and different contents are reported
as conflicts and resolved by the policy: "newest" (later updated_at, then the
source), "source" or "skip".
"""

from __future__ import annotations

import dataclasses
import queue
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING

from memsys.domain.errors import InvalidInputError, MemsysError
from memsys.domain.model import MemoryItem

if TYPE_CHECKING:
    from memsys.application.manager import MemoryManager

POLICIES = ("newest", "source", "skip")


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

    @property
    def in_sync(self) -> bool:
        return not (self.missing or self.stale or self.conflicts or self.extra or self.newer_in_target)


class SyncManager:
    def __init__(self, manager: MemoryManager, *, policy: str = "newest") -> None:
        if policy not in POLICIES:
            raise InvalidInputError(f"unknown conflict policy {policy!r}; use one of {POLICIES}")
        self.manager = manager
        self.policy = policy
        self._queue: queue.SimpleQueue[tuple[str, MemoryItem] | None] = queue.SimpleQueue()
        self._worker: threading.Thread | None = None
        self.failed_updates: list[tuple[str, str, str]] = []

    def _items(self, store: str) -> dict[str, MemoryItem]:
        return {i.id: i for i in self.manager._adapter(store).iter_items()}

    def diff(self, source: str, target: str) -> SyncReport:
        """How ``target`` differs from ``source``; changes nothing."""
        report = SyncReport(source, target)
        ours, theirs = self._items(source), self._items(target)
        for item_id, item in ours.items():
            other = theirs.get(item_id)
            if other is None:
                report.missing.append(item_id)
            elif other.version < item.version:
                report.stale.append(item_id)
            elif other.version > item.version:
                report.newer_in_target.append(item_id)
            elif other.to_dict() != item.to_dict():
                report.conflicts.append(item_id)
        report.extra = sorted(set(theirs) - set(ours))
        for ids in (report.missing, report.stale, report.newer_in_target, report.conflicts):
            ids.sort()
        return report

    def sync(self, source: str, target: str, *, delete_extra: bool = False) -> SyncReport:
        """Bring ``target`` up to ``source``: copy what is missing or older, resolve conflicts by the
        policy, and with ``delete_extra`` remove what ``source`` lacks, all in one transaction."""
        report = self.diff(source, target)
        ours, theirs = self._items(source), self._items(target)
        copy = report.missing + report.stale
        for item_id in report.conflicts:
            if self.policy == "source" or (self.policy == "newest"
                                           and ours[item_id].updated_at >= theirs[item_id].updated_at):
                copy.append(item_id)
        adapter = self.manager._adapter(target)
        if copy:
            self.manager.write_versions(target, [ours[i] for i in copy])
            report.copied = sorted(copy)
        if delete_extra and report.extra:
            with self.manager.with_transaction([target]):
                for item_id in report.extra:
                    adapter.delete(item_id)
            report.deleted = list(report.extra)
        return report

    def repair(self, stores: Sequence[str] | None = None) -> dict[str, list[str]]:
        """Give every store the newest version of every id any of them holds; returns ids copied per store."""
        names = list(stores or self.manager.adapters)
        contents = {name: self._items(name) for name in names}
        newest: dict[str, MemoryItem] = {}
        for items in contents.values():
            for item_id, item in items.items():
                best = newest.get(item_id)
                if best is None or (item.version, item.updated_at) > (best.version, best.updated_at):
                    newest[item_id] = item
        copied: dict[str, list[str]] = {}
        for name in names:
            behind = [item for item_id, item in newest.items()
                      if item_id not in contents[name] or contents[name][item_id].version < item.version]
            if behind:
                self.manager.write_versions(name, behind)
            copied[name] = sorted(i.id for i in behind)
        return copied

    # --- queued updates, for asynchronous processing

    def queue_update(self, store: str, item: MemoryItem) -> None:
        self.manager._adapter(store)
        if not isinstance(item, MemoryItem):
            raise InvalidInputError(f"queue_update takes a MemoryItem, got {type(item).__name__}")
        self._queue.put((store, item))

    def process_queue(self) -> int:
        """Apply every queued update now; returns how many were applied (failures are kept in
        ``failed_updates``)."""
        applied = 0
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                return applied
            if job is None:
                continue
            applied += self._apply(*job)

    def _apply(self, store: str, item: MemoryItem) -> int:
        try:
            self.manager._adapter(store).store(item)
            return 1
        except MemsysError as exc:
            self.failed_updates.append((store, item.id, str(exc)))
            return 0

    def start(self) -> None:
        """Process queued updates in a background thread until ``stop()``."""
        if self._worker is None:
            self._worker = threading.Thread(target=self._run, name="memsys-sync", daemon=True)
            self._worker.start()

    def _run(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            self._apply(*job)

    def stop(self) -> None:
        if self._worker is not None:
            self._queue.put(None)
            self._worker.join(timeout=30)
            self._worker = None
