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

Routing, breakers, monitoring
-----------------------------
``routing={memory type: stores, ..., "default": stores}`` (``memsys.application.routing``)
decides where ``store(item)`` writes an item: all its routed stores in one transaction.
``delete(id)`` removes it from every store that holds it; ``retrieve`` and ``search`` read
the routed stores, passing over failing ones. Every call the manager makes on a store goes
through the store's circuit breaker (``breakers=`` configures them per store) and its
monitor: ``stats()`` reports item counts, latency histograms, error rates, breaker states
and queue depths, ``register_metrics()`` exports them to Prometheus, and at DEBUG the
logger ``memsys.adapters.<backend>`` gets a line per call. See docs/operating.md.
"""

from __future__ import annotations

import inspect
import logging
import os
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from memsys.adapters._base import BaseMemoryStore
from memsys.adapters.foreign_store import as_participant
from memsys.application.oplog import OperationLog
from memsys.application.routing import RoutingTable
from memsys.application.transactions import Coordinator, DeadLetterRetry, RecoveryReport, TransactionContext
from memsys.application.txlog import CoordinatorLog, DeadLetter, MemoryLog, check_file_path
from memsys.domain.errors import (
    CommitIncompleteError,
    InvalidInputError,
    InvalidMemoryItemError,
    MemoryRetrievalError,
    MemoryStorageError,
    MemsysError,
    TransactionStateError,
)
from memsys.domain.query import MemoryQuery
from memsys.observability.calls import StoreMonitor
from memsys.observability.tracing import get_tracer
from memsys.resilience.cache import ReadThroughCache
from memsys.resilience.circuit_breaker import CircuitBreaker
from memsys.resilience.degraded import ReconciliationQueue
from memsys.domain.model import MemoryItem, check_id
from memsys.domain.operations import Delete, Put
from memsys.durable import PathLock

log = logging.getLogger("memsys.manager")
T = TypeVar("T")


class MemoryManager:
    def __init__(self, adapters: Mapping[str, Any] | None = None, *,
                 transaction_log: str | os.PathLike[str] | None = None,
                 operation_log: str | os.PathLike[str] | None = None,
                 store_priorities: Sequence[str] | None = None, compact_records: int = 20_000,
                 primary_store: str | None = None, secondary_stores: Sequence[str] = (),
                 fallback_store: str | None = None,
                 reconciliation_queue: str | os.PathLike[str] | None = None,
                 cache_capacity: int = 4096, cache_ttl: float | None = None,
                 failure_threshold: int = 3, reset_timeout: float = 30.0,
                 breakers: Mapping[str, CircuitBreaker | Mapping[str, Any]] | None = None,
                 routing: Mapping[Any, Any] | None = None) -> None:
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
        #: Where ``store(item)`` writes an item (memsys.application.routing); default: every store.
        self.routing = RoutingTable(routing, list(self.adapters))
        #: One circuit breaker per store, on every path that reaches it (transactions included).
        self.breakers = self._build_breakers(breakers or {}, failure_threshold, reset_timeout)
        #: Depths of the queues stats() reports, by name (``register_queue``).
        self._queues: dict[str, Callable[[], int]] = {}
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
            self.cache = ReadThroughCache(cache_capacity, cache_ttl)
            if reconciliation_queue is None and fallback_store is not None:
                log.warning("degraded mode without reconciliation_queue: queued writes live only in memory")
            self.reconciliation = ReconciliationQueue(reconciliation_queue)
            self.register_queue("reconciliation", self.reconciliation.__len__)
            self.coordinator = Coordinator(
                self.adapters, txlog, operation_log=OperationLog(oplog_path) if oplog_path is not None else None,
                compact_records=compact_records, breakers=self.breakers)
            #: Per store: breaker, latency histograms and outcome counts of every call (stats()).
            self.monitors: dict[str, StoreMonitor] = self.coordinator.monitors
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
        """Store ``item`` in its routed stores (or in ``stores``), atomically: all of them or none.

        Vector stores embed it while the transaction prepares; a store whose circuit is open
        aborts the transaction at once (TransactionAbortedError caused by CircuitBreakerOpenError).
        """
        if not isinstance(item, MemoryItem):
            raise InvalidMemoryItemError(f"store takes a MemoryItem, got {type(item).__name__}")
        targets = list(stores) if stores is not None else self.routing.stores_for(item)
        with self.with_transaction(targets) as tx:
            for adapter in tx.adapters.values():
                adapter.store(item)
        return item.id

    def route(self, item: MemoryItem) -> list[str]:
        """The stores ``store(item)`` writes ``item`` to."""
        return self.routing.stores_for(item)

    def delete(self, item_id: str, stores: Sequence[str] | None = None) -> bool:
        """Delete ``item_id`` from every store that holds it (of ``stores``, default all), graph
        edges that touch it included, atomically. A store that cannot say whether it holds the
        item takes part anyway (a delete is idempotent), so its failure aborts the delete rather
        than leave the item behind."""
        check_id(item_id)
        candidates = list(stores) if stores is not None else list(self.adapters)
        holding = []
        for name in candidates:
            adapter = self._adapter(name)
            try:
                present = self.call(name, "retrieve", adapter.retrieve, item_id) is not None
            except MemsysError as exc:
                if isinstance(exc, InvalidInputError):
                    raise
                present = True
            if present:
                holding.append(name)
        if not holding:
            return False
        with self.with_transaction(holding) as tx:
            found = [adapter.delete(item_id) for adapter in tx.adapters.values()]
        return any(found)

    def retrieve(self, item_id: str, store: str | None = None) -> MemoryItem | None:
        """The item from ``store``, or from the first store by priority that has it, passing over
        failing stores (and open circuits). None when no store has it; MemoryRetrievalError when
        it is nowhere to be found and some store could not answer."""
        check_id(item_id)
        if store is not None:
            return self.call(store, "retrieve", self._adapter(store).retrieve, item_id, span=True)
        with self._span("memsys.retrieve"):
            errors: dict[str, BaseException] = {}
            for name in self.store_priorities:
                try:
                    item = self.call(name, "retrieve", self.adapters[name].retrieve, item_id, span=True)
                except MemsysError as exc:
                    if isinstance(exc, InvalidInputError):
                        raise
                    errors[name] = exc
                    continue
                if item is not None:
                    return item
            if errors:
                raise MemoryRetrievalError(f"item {item_id!r} is in no store that answered; failed: "
                                           + "; ".join(f"{n}: {e}" for n, e in errors.items()), errors)
            return None

    def search(self, query: Any = None) -> list[MemoryItem]:
        """Items matching ``query`` (a MemoryQuery dict), read from the stores its memory types
        are routed to: per route, the first store by priority that answers. Results are merged
        by id (the newest version wins), ordered and limited as ``search`` does. A route none of
        whose stores answers raises MemoryRetrievalError naming what failed."""
        parsed = MemoryQuery.parse(query)
        rank = {name: n for n, name in enumerate(self.store_priorities)}
        with self._span("memsys.search"):
            answers: dict[str, list[MemoryItem]] = {}
            errors: dict[str, BaseException] = {}
            for route in self.routing.routes_for(parsed.memory_types):
                if any(name in answers for name in route.stores):
                    continue  # a store of this route already answered (each holds the route's items)
                for name in sorted(route.stores, key=lambda n: rank.get(n, len(rank))):
                    if name in errors:
                        continue
                    try:
                        answers[name] = self.call(name, "search", self.adapters[name].search, parsed, span=True)
                        break
                    except MemsysError as exc:
                        if isinstance(exc, InvalidInputError):
                            raise
                        errors[name] = exc
                else:
                    raise MemoryRetrievalError(
                        f"no store of route {route.describe()} answered the search: "
                        + "; ".join(f"{n}: {errors[n]}" for n in route.stores if n in errors), errors)
        newest: dict[str, MemoryItem] = {}
        for items in answers.values():
            for item in items:
                if item.id not in newest or item.version > newest[item.id].version:
                    newest[item.id] = item
        return parsed.select(newest.values())

    # --- the one way the manager calls a store: breaker, stats, DEBUG line, span

    def call(self, store: str, operation: str, fn: Callable[..., T], *args: Any, span: bool = False,
             **kwargs: Any) -> T:
        """Run ``fn(*args, **kwargs)`` (a call on ``store``) through the store's circuit breaker and
        monitor, as ``operation``: it fails fast with CircuitBreakerOpenError while the circuit is
        open, and its latency and outcome show in ``stats()``, the metrics and the DEBUG log."""
        monitor = self.monitors.get(store)
        if monitor is None:
            raise InvalidInputError(f"unknown store {store!r}; this manager has {sorted(self.adapters)}")
        current = self.coordinator.current()
        return monitor.call(operation, fn, *args, txid=current.transaction_id if current is not None else "",
                            span=span, **kwargs)

    def _span(self, name: str) -> Any:
        """A span for a read across stores (a no-op, built for nothing, without an SDK)."""
        tracer = self.coordinator.tracer
        if not tracer.active:
            return tracer.start_as_current_span(name)
        current = self.coordinator.current()
        return tracer.start_as_current_span(name, attributes={
            "memsys.transaction_id": current.transaction_id if current is not None else ""})

    def _build_breakers(self, config: Mapping[str, CircuitBreaker | Mapping[str, Any]], failure_threshold: int,
                        reset_timeout: float) -> dict[str, CircuitBreaker]:
        unknown = sorted(set(config) - set(self.adapters))
        if unknown:
            raise InvalidInputError(f"breakers for unknown stores {unknown}; this manager has {sorted(self.adapters)}")
        breakers = {}
        for name in self.adapters:
            given = config.get(name)
            if isinstance(given, CircuitBreaker):
                breakers[name] = given
                continue
            options = dict(given or {})
            bad = sorted(set(options) - {"failure_threshold", "reset_timeout"})
            if bad:
                raise InvalidInputError(f"breaker options for {name!r} may be failure_threshold and reset_timeout, "
                                        f"got {bad}")
            breakers[name] = CircuitBreaker(options.get("failure_threshold", failure_threshold),
                                            options.get("reset_timeout", reset_timeout), name=name)
        return breakers

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
                item = self.call(name, "retrieve", adapter.retrieve, item_id)
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
                item = self.call(name, "retrieve", self.adapters[name].retrieve, item_id)
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
        written = self._read_back(self.fallback_store, item)
        for name in [self.primary_store, *self.secondary_stores]:
            self.reconciliation.add(name, written)
        log.warning("degraded mode: %s stored in %s; %s queued for reconciliation", item.id,
                    self.fallback_store, self.primary_store)
        return item.id

    def _try_store(self, name: str, item: MemoryItem, errors: dict[str, BaseException]) -> MemoryItem | None:
        try:
            self.adapters[name].store(item)  # a transaction: its prepare passes the store's breaker
        except CommitIncompleteError:
            return item  # committed: the log holds it and recovery completes the store
        except MemsysError as exc:
            if isinstance(exc, InvalidInputError):
                raise
            errors[name] = exc
            log.error("store %s failed to store %s: %s", name, item.id, exc)
            return None
        return self._read_back(name, item)

    def _read_back(self, name: str, item: MemoryItem) -> MemoryItem:
        """The committed item as the store stamped it; the item itself if the read fails: the write
        is committed, and a read-back that misses its deadline must not make the caller think it
        failed (it would skip the other stores and the queue)."""
        try:
            return self.call(name, "retrieve", self.adapters[name].retrieve, item.id) or item
        except MemsysError:
            return item

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
                current = self.call(entry.store, "retrieve", adapter.retrieve, entry.item.id)
                if current is not None and current.version >= entry.item.version:
                    skipped += 1  # the store has this write or a newer one: never go back in time
                else:
                    self.write_versions(entry.store, [entry.item])  # its prepare passes the breaker
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

    # --- monitoring

    def register_queue(self, name: str, depth: Callable[[], int]) -> None:
        """Report ``depth()`` as queue ``name`` in stats() and the metrics. A bound method is held
        weakly: the queue leaves the report when its owner is gone (a SyncManager registers
        "sync" this way)."""
        if not isinstance(name, str) or not name or not callable(depth):
            raise InvalidInputError("register_queue takes a non-empty name and a callable returning the depth")
        if inspect.ismethod(depth):
            ref = weakref.WeakMethod(depth)

            def weak_depth() -> int:
                method = ref()
                if method is None:
                    raise LookupError(name)
                return method()

            self._queues[name] = weak_depth
        else:
            self._queues[name] = depth

    def queue_depths(self) -> dict[str, int | None]:
        """Depth of every registered queue (None for one that cannot say); "sync" is 0 while no
        SyncManager has registered its queue."""
        depths: dict[str, int | None] = {"sync": 0}
        for name, depth in list(self._queues.items()):
            try:
                depths[name] = int(depth())
            except LookupError:
                self._queues.pop(name, None)
            except Exception:
                log.debug("queue %s could not report its depth", name, exc_info=True)
                depths[name] = None
        return depths

    def stats(self, *, count_items: bool = True) -> dict[str, Any]:
        """What an operator watches, per store and in all::

            {"stores": {name: {"backend", "items", "breaker": {"state", "failures", "opened", ...},
                               "quarantined", "calls", "errors", "rejected", "error_rate",
                               "operations": {op: {"calls", "ok", "error", "invalid", "rejected",
                                                   "error_rate", "latency": {"buckets": [(le, n)...],
                                                   "sum", "count", "p50", "p99"}}}}},
             "queues": {"reconciliation": n, "sync": n, ...},
             "transactions": {counter: n},
             "routing": [route, ...]}

        ``items`` is the store's count (through its breaker: None, with ``items_error``, when
        it cannot answer); ``count_items=False`` skips counting (a scrape that must not touch
        the stores)."""
        quarantined = self.coordinator.quarantined
        stores: dict[str, Any] = {}
        for name, monitor in self.monitors.items():
            adapter = self.adapters[name]
            entry: dict[str, Any] = {"backend": getattr(adapter, "backend", type(adapter).__name__), "items": None}
            counter = getattr(adapter, "count", None)
            if count_items and callable(counter):
                try:
                    entry["items"] = self.call(name, "count", counter)
                except Exception as exc:  # a third-party store may fail untyped: report it, never fail stats()
                    entry["items_error"] = f"{type(exc).__name__}: {exc}"
            elif count_items:
                entry["items_error"] = "the store cannot count its items"
            entry["breaker"] = monitor.breaker.snapshot()
            entry["quarantined"] = quarantined.get(name)
            entry.update(monitor.snapshot())
            stores[name] = entry
        counters = self.coordinator.metrics.snapshot()["counters"]
        return {"stores": stores, "queues": self.queue_depths(), "transactions": dict(counters),
                "routing": self.routing.describe()}

    def register_metrics(self, registry: Any = None, *, prefix: str = "memsys") -> Any:
        """Export stats() as Prometheus metrics through prometheus_client (the ``metrics`` extra)
        in ``registry`` (default: prometheus_client's global one); returns the collector
        (``registry.unregister(collector)`` removes it). Values are read when scraped."""
        from memsys.observability.prometheus import register

        return register(self, registry, prefix=prefix)

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
