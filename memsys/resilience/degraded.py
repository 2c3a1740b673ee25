"""The reconciliation queue of degraded mode: writes that missed a store, kept on disk until applied.

Each entry is one item (with the version it was committed with) and the store
it still has to reach, appended as one framed, checksummed record
(memsys.durable.FramedLog) and fsynced before the write is acknowledged. An
append that fails (a full disk) raises the memsys error for it and leaves the
file as it was, so the next entry lands on an intact file. Reconciliation
applies, per store and id, only the newest entry, and only if the store does
not already hold a newer version: a stale queued write never overwrites newer
data.

Files written before the framed format (JSON lines) are still read, and
rewritten in the framed format at their first change. The queue file is
locked (PathLock) while a queue has it open: two queues on one file would
each rewrite it without the other's entries.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import threading
import weakref
from typing import Any

from memsys.domain.errors import CorruptStoreError, StoreClosedError
from memsys.domain.model import MemoryItem, decode_item
from memsys.durable import FramedLog, PathLock, os_error, remove_stale_temps

log = logging.getLogger("memsys.degraded")

_KIND = "RECONCILE"


@dataclasses.dataclass(frozen=True)
class QueuedWrite:
    seq: int
    store: str
    item: MemoryItem


def _encode(entry: QueuedWrite) -> bytes:
    return json.dumps({"seq": entry.seq, "store": entry.store, "item": entry.item.to_dict()},
                      ensure_ascii=False).encode()


def _close(lock: PathLock | None, framed: FramedLog | None) -> None:
    if framed is not None:
        framed.close()
    if lock is not None:
        lock.release()


class ReconciliationQueue:
    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = None if path is None else os.path.abspath(os.fspath(path))
        self._lock = threading.Lock()
        self._entries: list[QueuedWrite] = []
        self._seq = 0
        self._legacy = False  # the file holds JSON lines: rewrite it framed at its first change
        self._file: FramedLog | None = None
        self._path_lock: PathLock | None = None
        if self.path is not None:
            self._path_lock = PathLock.acquire(self.path, owner="a reconciliation queue")
            try:
                self._file = FramedLog(self.path, _KIND)
                remove_stale_temps(os.path.dirname(self.path), os.path.basename(self.path))
                self._load()
            except BaseException:
                _close(self._path_lock, self._file)
                raise
        # A queue dropped without close() must not keep its file locked for the life of the process.
        self._finalizer = weakref.finalize(self, _close, self._path_lock, self._file)

    # --- reading

    def _load(self) -> None:
        assert self.path is not None and self._file is not None
        try:
            with open(self.path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            data = b""
        except OSError as exc:
            raise os_error(exc, f"reading the reconciliation queue {self.path}", path=self.path) from exc
        if data.startswith(b"{"):
            self._legacy = True
            entries = self._read_json_lines(data)
        else:
            entries = [self._decode(payload, f"record at byte {offset}") for offset, payload in self._file.read()]
        for entry in entries:
            self._entries.append(entry)
            self._seq = max(self._seq, entry.seq)

    def _read_json_lines(self, data: bytes) -> list[QueuedWrite]:
        """The JSON-lines format of earlier versions. Every line was written with its newline in one
        write, so only an unterminated last line can be torn (never acknowledged)."""
        lines = data.split(b"\n")
        if lines[-1]:
            log.warning("%s: ignoring a torn last line (%d bytes)", self.path, len(lines[-1]))
        entries = []
        for n, line in enumerate(lines[:-1], 1):
            try:
                entries.append(self._decode(line, f"line {n}"))
            except CorruptStoreError:
                salvaged = self._salvage(line)
                if salvaged is None:
                    raise
                log.warning("%s: line %d held a torn entry with an acknowledged one appended to it; "
                            "keeping the acknowledged one", self.path, n)
                entries.append(salvaged)
        return entries

    def _salvage(self, line: bytes) -> QueuedWrite | None:
        """Earlier versions appended the next entry onto a line torn by a full disk; that entry was
        acknowledged. It is the complete entry at the end of the line."""
        start = line.rfind(b'{"seq": ')
        if start <= 0:
            return None
        try:
            return self._decode(line[start:], "")
        except CorruptStoreError:
            return None

    def _decode(self, payload: bytes, where: str) -> QueuedWrite:
        try:
            record = json.loads(payload)
            seq, store = record["seq"], record["store"]
            if type(seq) is not int or seq < 1 or not isinstance(store, str) or not store:
                raise ValueError(f"seq {seq!r} / store {store!r}")
            return QueuedWrite(seq, store, decode_item(record["item"]))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise CorruptStoreError(f"{self.path}: {where} is not a queued write ({type(exc).__name__}: {exc}); "
                                    "the file is left as it is", path=self.path) from exc

    # --- writing

    def add(self, store: str, item: MemoryItem) -> None:
        """Queue ``item`` for ``store``; durable before it returns. On failure (DiskFullError, ...)
        nothing was queued and the file is as it was."""
        with self._lock:
            self._check_open()
            entry = QueuedWrite(self._seq + 1, store, item)
            if self._file is not None:
                if self._legacy:
                    self._file.rewrite([_encode(e) for e in [*self._entries, entry]], sync=True)
                    self._legacy = False
                else:
                    self._file.append([_encode(entry)], sync=True)
            self._seq = entry.seq
            self._entries.append(entry)

    def latest(self) -> list[QueuedWrite]:
        """The newest queued write per (store, id), oldest first."""
        with self._lock:
            newest: dict[tuple[str, str], QueuedWrite] = {}
            for entry in self._entries:
                newest[(entry.store, entry.item.id)] = entry
            return sorted(newest.values(), key=lambda e: e.seq)

    def done(self, entries: list[QueuedWrite]) -> None:
        """Drop ``entries`` and every older entry for the same (store, id). If the file cannot be
        rewritten, the entries stay queued (applying them again changes nothing)."""
        with self._lock:
            self._check_open()
            cutoff = {(e.store, e.item.id): e.seq for e in entries}
            remaining = [e for e in self._entries if e.seq > cutoff.get((e.store, e.item.id), -1)]
            if self._file is not None:
                self._file.rewrite([_encode(e) for e in remaining], sync=True)
                self._legacy = False
            self._entries = remaining

    def close(self) -> None:
        """Release the file (and its lock). The entries stay on disk for the next open."""
        with self._lock:
            self._finalizer()

    def _check_open(self) -> None:
        if self.path is not None and not self._finalizer.alive:
            raise StoreClosedError(f"the reconciliation queue {self.path} is closed")

    def __len__(self) -> int:
        return len(self._entries)

    def stores(self) -> set[str]:
        return {e.store for e in self._entries}

    def describe(self) -> dict[str, Any]:
        return {"pending": len(self), "stores": sorted(self.stores())}
