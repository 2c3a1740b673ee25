"""MemoryManager: one entry point over named stores, with atomic cross-store writes.

    manager = MemoryManager({"lmdb": LMDBMemoryAdapter(path=...), "duckdb": DuckDBMemoryAdapter(path=...)},
                            transaction_log="memory/txlog")
    with manager.with_transaction(["lmdb", "duckdb"]):
        manager.adapters["lmdb"].store(item_a)
        manager.adapters["duckdb"].store(item_b)

Every store a manager owns is managed: a write outside a transaction is a
transaction of its own (logged, version-stamped), so it can never slip between
another transaction's read and write unseen. Opening a manager on the same
stores and log after a crash runs recovery before anything else. One manager
at a time owns a ``transaction_log`` (and an ``operation_log``): a second one,
in this process or another, gets StoreLockedError naming the holder.

A failed call never commits later: a transaction whose log write fails (a full
disk: TransactionAbortedError caused by DiskFullError) is rolled back on every
store, and nothing of it stays in the log.

When a store cannot apply a committed write
-------------------------------------------
The log holds the write, so it is never lost; what happens depends on the error.

* Transient (store unavailable, busy, disk full): retried, then the store is
  quarantined and the transaction raises CommitIncompleteError (committed).
  Transactions that need the store first recover it; ``recover()`` does it on
  demand. The log keeps every write the store lacks (compaction carries them
  over), also when a later manager is opened without that store; without a
  ``transaction_log`` they are kept in memory and ``recover()`` redoes them.
* Refused for good (the engine cannot take this one operation: too large, out
  of range): recovery bisects the store's batch, applies everything else, and
  moves the refused operations to the dead-letter file beside the log
  (``<transaction_log>.dead-letters``), logging an ERROR line for each. The
  store goes on and the log can be compacted. Nothing is dropped silently:

  - ``manager.last_recovery.dead_lettered`` / ``manager.recover()`` list what was
    moved (``ok`` is False while any dead letter waits);
  - ``manager.dead_letters()`` lists them; ``memsys dead-letters --log PATH``
    lists them without opening the stores;
  - ``manager.retry_dead_letters(ids)`` applies them again once the cause is
    removed (a store that already has a newer version keeps it);
  - ``manager.discard_dead_letters(ids)`` gives them up, explicitly and logged.

  A store that refuses every write (damaged, read-only, closed) is not
  dead-lettered: it stays quarantined until it is repaired.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

from memsys.adapters._base import BaseMemoryStore
from memsys.adapters.foreign_store import as_participant
from memsys.application.oplog import OperationLog
from memsys.application.transactions import Coordinator, DeadLetterRetry, RecoveryReport, TransactionContext
from memsys.application.txlog import CoordinatorLog, DeadLetter, MemoryLog, check_file_path
from memsys.domain.errors import (
    CommitIncompleteError,
    InvalidInputError,
    MemoryRetrievalError,
    MemoryStorageError,
    MemsysError,
    TransactionStateError,
)
from memsys.resilience.cache import ReadThroughCache
from memsys.resilience.circuit_breaker import CircuitBreaker
from memsys.resilience.degraded import ReconciliationQueue
from memsys.domain.model import MemoryItem, check_id
from memsys.domain.operations import Delete, Put
from memsys.durable import PathLock

log = logging.getLogger("memsys.manager")


class MemoryManager:
    def __init__(self, adapters: Mapping[str, Any] | None = None, *,
                 transaction_log: str | os.PathLike[str] | None = None,
                 operation_log: str | os.PathLike[str] | None = None,
                 store_priorities: Sequence[str] | None = None, compact_records: int = 20_000,
                 primary_store: str | None = None, secondary_stores: Sequence[str] = (),
                 fallback_store: str | None = None,
                 reconciliation_queue: str | os.PathLike[str] | None = None,
                 cache_capacity: int = 4096, cache_ttl: float | None = None,
                 failure_threshold: int = 3, reset_timeout: float = 30.0) -> None:
        self.adapters: dict[str, BaseMemoryStore] = {}
        for name, adapter in (adapters or {}).items():
            if not isinstance(name, str) or not name:
                raise InvalidInputError(f"store names must be non-empty strings, got {name!r}")
            participant = as_participant(name, adapter)
            if participant._coordinator is not None:
                raise TransactionStateError(f"store {name!r} already belongs to another MemoryManager", store=name)
            self.adapters[name] = participant
        self.store_priorities = list(store_priorities or self.adapters)
        self.primary_store = primary_store or (self.store_priorities[0] if self.store_priorities else None)
        self.secondary_stores = list(secondary_stores)
        self.fallback_store = fallback_store
        named = [*self.store_priorities, *self.secondary_stores,
                 *(s for s in (self.primary_store, fallback_store) if s is not None)]
        unknown = sorted({s for s in named if s not in self.adapters})
        if unknown:
            raise InvalidInputError(f"unknown stores {unknown}; this manager has {sorted(self.adapters)}")
        if isinstance(compact_records, bool) or not isinstance(compact_records, int) or compact_records < 1:
            raise InvalidInputError(f"compact_records must be a positive int, got {compact_records!r}")
        # The logs are checked and locked before anything is bound, so a refused manager changes nothing.
        txlog = CoordinatorLog(transaction_log) if transaction_log is not None else MemoryLog()
        oplog_path = check_file_path(operation_log, "operation_log") if operation_log is not None else None
        if oplog_path is not None and transaction_log is not None \
                and os.path.abspath(oplog_path) == os.path.abspath(txlog.path):
            raise InvalidInputError(f"operation_log and transaction_log are the same file ({oplog_path!r})")
        try:
            if transaction_log is not None:
                txlog.lock(owner=f"MemoryManager transaction_log, stores {sorted(self.adapters)}")
            else:
                log.warning("MemoryManager without transaction_log: transactions are atomic while the process "
                            "lives, but a crash mid-commit cannot be recovered")
            if oplog_path is not None:  # released with the log, like the log's own lock
                txlog.hold(PathLock.acquire(oplog_path, owner="MemoryManager operation_log"))
            #: One circuit breaker per store (the guide's CircuitBreaker), used by the fallback paths.
            self.breakers = {name: CircuitBreaker(failure_threshold, reset_timeout, name=name)
                             for name in self.adapters}
            self.cache = ReadThroughCache(cache_capacity, cache_ttl)
            if reconciliation_queue is None and fallback_store is not None:
                log.warning("degraded mode without reconciliation_queue: queued writes live only in memory")
            self.reconciliation = ReconciliationQueue(reconciliation_queue)
            self.coordinator = Coordinator(
                self.adapters, txlog, operation_log=OperationLog(oplog_path) if oplog_path is not None else None,
                compact_records=compact_records)
            for name, adapter in self.adapters.items():
                adapter.name = name
                adapter._coordinator = self.coordinator
            self.coordinator.listeners.append(self._invalidate)
            #: What recovery did when this manager opened.
            self.last_recovery: RecoveryReport = self.coordinator.recover()
        except BaseException:
            # Leave the stores free for another manager, and the logs unlocked.
            for adapter in self.adapters.values():
                if getattr(self, "coordinator", None) is not None and adapter._coordinator is self.coordinator:
                    adapter._coordinator = None
            closer = getattr(getattr(self, "reconciliation", None), "close", None)
            if callable(closer):
                closer()
            txlog.close()
            raise

    # --- transactions

    def with_transaction(self, stores: Sequence[str] | None = None) -> TransactionContext:
        """A transaction over ``stores`` (default: all). Use it as a context manager."""
        return TransactionContext(self.coordinator, list(stores) if stores is not None else list(self.adapters))

    def recover(self) -> RecoveryReport:
        """Redo what the log has decided and the stores may lack; report what was done, including
        operations moved to the dead-letter file (``dead_lettered``)."""
        self.last_recovery = self.coordinator.recover()
        return self.last_recovery

    # --- dead letters: committed operations a store refused for good (see the module docstring)

    def dead_letters(self, store: str | None = None) -> list[DeadLetter]:
        """The dead letters waiting for an operator (of ``store``, or all), oldest first."""
        return self.coordinator.dead_letters(store)

    def retry_dead_letters(self, ids: Sequence[str] | None = None) -> DeadLetterRetry:
        """Apply the dead letters ``ids`` (default: all) again, now that their cause is removed."""
        return self.coordinator.retry_dead_letters(ids)

    def discard_dead_letters(self, ids: Sequence[str]) -> list[DeadLetter]:
        """Give up the named dead letters for good; their stores never apply them."""
        return self.coordinator.discard_dead_letters(ids)

    # --- whole-item operations across stores, each one transaction

    def store(self, item: MemoryItem, stores: Sequence[str] | None = None) -> str:
        """Store ``item`` in every one of ``stores`` (default: all), atomically."""
        with self.with_transaction(stores) as tx:
            for adapter in tx.adapters.values():
                adapter.store(item)
        return item.id

    def delete(self, item_id: str, stores: Sequence[str] | None = None) -> bool:
        """Delete ``item_id`` (and, in graph stores, its edges) from every store, atomically."""
        check_id(item_id)
        with self.with_transaction(stores) as tx:
            found = [adapter.delete(item_id) for adapter in tx.adapters.values()]
        return any(found)

    def retrieve(self, item_id: str, store: str | None = None) -> MemoryItem | None:
        """The item from ``store``, or from the first store by priority that has it."""
        if store is not None:
            return self._adapter(store).retrieve(item_id)
        for name in self.store_priorities:
            item = self.adapters[name].retrieve(item_id)
            if item is not None:
                return item
        return None

    # --- the guide's fallback mechanisms

    def get_with_fallback(self, item_id: str, stores: Sequence[str] | None = None) -> MemoryItem:
        """The item from the first store, by priority, that answers with it.

        A failing store (or one whose circuit is open) is passed over; if no store has the
        item, MemoryRetrievalError says which stores failed and how (``errors``).
        """
        check_id(item_id)
        errors: dict[str, BaseException] = {}
        for name in stores or self.store_priorities:
            adapter = self._adapter(name)
            try:
                item = self.breakers[name].execute(adapter.retrieve, item_id)
            except MemsysError as exc:
                if isinstance(exc, InvalidInputError):
                    raise
                errors[name] = exc
                continue
            if item is not None:
                return item
        detail = "; ".join(f"{n}: {e}" for n, e in errors.items()) or "no store holds it"
        raise MemoryRetrievalError(f"failed to retrieve item {item_id!r} from any store: {detail}", errors)

    def get_with_cache(self, item_id: str) -> MemoryItem | None:
        """Read-through: the cache, else the primary store, else the fallback stores; None if nowhere."""
        check_id(item_id)
        cached = self.cache.get(item_id)
        if cached is not None:
            return cached
        order = [self.primary_store] + [s for s in self.store_priorities if s != self.primary_store]
        for name in order:
            if name is None:
                continue
            try:
                item = self.breakers[name].execute(self.adapters[name].retrieve, item_id)
            except MemsysError as exc:
                if isinstance(exc, InvalidInputError):
                    raise
                log.warning("get_with_cache: store %s failed: %s", name, exc)
                continue
            if item is not None:
                self.cache.set(item_id, item)
                return item
        return None

    def _invalidate(self, by_store: dict[str, list[Any]]) -> None:
        for ops in by_store.values():
            for op in ops:
                if isinstance(op, (Put, Delete)):
                    self.cache.invalidate(op.item_id)

    def store_with_degraded_mode(self, item: MemoryItem) -> str:
        """Store in the primary and then the secondaries; if the primary fails, in the fallback.

        A write that misses a store goes to the durable reconciliation queue; ``reconcile()``
        applies it when the store is back, never over a newer version. Only when the primary
        and the fallback both fail does the write fail (MemoryStorageError).
        """
        if not isinstance(item, MemoryItem):
            raise InvalidInputError(f"store_with_degraded_mode takes a MemoryItem, got {type(item).__name__}")
        if self.primary_store is None:
            raise InvalidInputError("store_with_degraded_mode needs a primary store")
        errors: dict[str, BaseException] = {}
        stored = self._try_store(self.primary_store, item, errors)
        if stored is not None:
            for name in self.secondary_stores:
                if self._try_store(name, item, errors) is None:
                    self.reconciliation.add(name, stored)
            return item.id
        if self.fallback_store is None or self._try_store(self.fallback_store, item, errors) is None:
            raise MemoryStorageError(f"all stores failed to store {item.id!r}: "
                                     + "; ".join(f"{n}: {e}" for n, e in errors.items()), errors)
        written = self.adapters[self.fallback_store].retrieve(item.id) or item
        for name in [self.primary_store, *self.secondary_stores]:
            self.reconciliation.add(name, written)
        log.warning("degraded mode: %s stored in %s; %s queued for reconciliation", item.id,
                    self.fallback_store, self.primary_store)
        return item.id

    def _try_store(self, name: str, item: MemoryItem, errors: dict[str, BaseException]) -> MemoryItem | None:
        try:
            self.breakers[name].execute(self.adapters[name].store, item)
        except CommitIncompleteError:
            return item  # committed: the log holds it and recovery completes the store
        except MemsysError as exc:
            if isinstance(exc, InvalidInputError):
                raise
            errors[name] = exc
            log.error("store %s failed to store %s: %s", name, item.id, exc)
            return None
        return self.adapters[name].retrieve(item.id)

    @property
    def degraded_mode(self) -> bool:
        """True while writes wait in the reconciliation queue."""
        return len(self.reconciliation) > 0

    def reconcile(self) -> dict[str, int]:
        """Apply queued writes whose store is back; skip any the store already has newer."""
        applied = skipped = failed = 0
        finished = []
        for entry in self.reconciliation.latest():
            adapter = self.adapters[entry.store]
            try:
                current = self.breakers[entry.store].execute(adapter.retrieve, entry.item.id)
                if current is not None and current.version >= entry.item.version:
                    skipped += 1  # the store has this write or a newer one: never go back in time
                else:
                    self.breakers[entry.store].execute(self.write_versions, entry.store, [entry.item])
                    applied += 1
                finished.append(entry)
            except MemsysError as exc:
                failed += 1
                log.info("reconciliation of %s on %s deferred: %s", entry.item.id, entry.store, exc)
        if finished:
            self.reconciliation.done(finished)
        return {"applied": applied, "skipped_newer": skipped, "failed": failed, "pending": len(self.reconciliation)}

    def write_versions(self, store: str, items: Sequence[MemoryItem]) -> None:
        """Write items to ``store`` keeping their versions (a replay of writes committed elsewhere)."""
        adapter = self._adapter(store)
        self.coordinator.write_outside_transaction(adapter, [Put(item) for item in items], stamp=False)

    def _adapter(self, store: str) -> BaseMemoryStore:
        try:
            return self.adapters[store]
        except KeyError:
            raise InvalidInputError(f"unknown store {store!r}; this manager has {sorted(self.adapters)}") from None

    # --- lifecycle

    @property
    def metrics(self) -> dict[str, object]:
        return self.coordinator.metrics.snapshot()

    def close(self) -> None:
        """Checkpoint the log (so the next open has nothing to redo but what a store still lacks),
        release the logs and the reconciliation queue, and close every store."""
        try:
            self.coordinator.close()
        finally:
            try:
                closer = getattr(self.reconciliation, "close", None)  # releases the queue's file lock
                if callable(closer):
                    closer()
            finally:
                for adapter in self.adapters.values():
                    adapter._coordinator = None
                    adapter.close()

    def __enter__(self) -> MemoryManager:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"MemoryManager(stores={sorted(self.adapters)})"


__all__ = ["MemoryManager"]
