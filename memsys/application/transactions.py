"""Cross-store transactions: two-phase commit over a durable coordinator log.

None of LMDB, DuckDB or Kuzu can keep a durable "prepared" state, so the
commit point is the coordinator's log record, not a participant's:

1. Writes are buffered (each adapter's thread-bound transaction); nobody else
   sees them, the transaction itself does.
2. Prepare: every participant validates and completes its write set
   (``prepare_ops``) without changing anything. A failure rolls every
   participant back and raises TransactionAbortedError naming the store.
3. Decide: conflicts are checked (first committer wins: a transaction fails
   with ConflictError if an id it writes was committed by another transaction
   after it began), the transaction gets its LSN, and its whole write set goes
   into the log, which is fsynced. Concurrent transactions share one append
   and one fsync (group commit: the first waiter leads, the rest follow).
4. Apply: each store applies the group's operations in LSN order, in one
   native transaction where it has them, with no fsync of its own (the log
   holds the writes). Every operation is idempotent. A store that fails is
   retried (transient errors), then quarantined; its transactions raise
   CommitIncompleteError, which means committed: recovery completes the store.
5. Recovery redoes every commit after the last checkpoint, in LSN order; a
   transaction with no commit record is presumed aborted and has touched no
   store. Compaction flushes the stores and replaces the log by a checkpoint
   followed by every commit a store still lacks (quarantined, or not in this
   manager), so it never forgets a write that has not reached its store.
6. Dead letters: an operation a store refuses for good (a permanent,
   operation-level error, still refused after the store has shown that it takes
   writes) is isolated by recovery (the batch is bisected, the rest applied),
   moved to the durable dead-letter file beside the log with an ERROR audit
   line, and the store goes on. ``RecoveryReport.dead_lettered`` lists what was
   moved; the manager lists, retries and discards dead letters.

Every committed Put is stamped with the transaction's LSN as its version and
with the LSN's time as its updated_at, so "newer" is decidable everywhere.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
import queue
from concurrent.futures import Future, as_completed, wait
from typing import TYPE_CHECKING, Any

from memsys.application.txlog import DeadLetter
from memsys.domain.errors import (
    CircuitBreakerOpenError,
    CommitIncompleteError,
    ConflictError,
    CorruptStoreError,
    InvalidInputError,
    MemsysError,
    MissingBackend,
    PermanentError,
    ReadOnlyStoreError,
    StoreClosedError,
    StoreUnavailableError,
    TransactionAbortedError,
    TransactionStateError,
)
from memsys.domain.model import from_epoch_us, trusted_item
from memsys.domain.operations import Delete, Operation, Put, decode_op, encode_op, op_key
from memsys.durable import os_error
from memsys.observability.calls import StoreMonitor
from memsys.observability.metrics import Metrics
from memsys.observability.tracing import get_tracer
from memsys.resilience.circuit_breaker import CircuitBreaker, CircuitState
from memsys.resilience.retry import retry_with_backoff

if TYPE_CHECKING:
    from memsys.adapters._base import BaseMemoryStore
    from memsys.application.oplog import OperationLog
    from memsys.application.txlog import CoordinatorLog

log = logging.getLogger("memsys.transactions")

#: The protocol steps at which crash experiments stop the process (``Coordinator.crash_hook``).
STEPS = ("after_prepare", "after_log_write", "after_log_sync", "after_first_apply", "after_apply", "after_end")

#: Recovery applies a store's logged operations in batches of this many.
REDO_BATCH = 2000

#: Permanent errors that are about the store, not about an operation: never a reason to
#: dead-letter an operation (the store stays quarantined until it is repaired).
_STORE_LEVEL = (CorruptStoreError, ReadOnlyStoreError, StoreClosedError, MissingBackend)


def _refused_for_good(exc: BaseException) -> bool:
    """Whether ``exc`` says a store will never apply this operation (as opposed to: the store is
    down, busy, full, closed, read-only or damaged, which retries or repairs fix)."""
    return isinstance(exc, PermanentError) and not isinstance(exc, _STORE_LEVEL)


@dataclasses.dataclass
class RecoveryReport:
    """What recovery did: ids of transactions redone, completed, presumed aborted; stores it
    could not complete; operations it moved to the dead-letter file.

    ``ok`` is true only when every logged write is in its store: no failed store and no dead
    letter waiting for an operator.
    """

    redone: list[str] = dataclasses.field(default_factory=list)
    completed: list[str] = dataclasses.field(default_factory=list)
    undone: list[str] = dataclasses.field(default_factory=list)
    failed_stores: dict[str, str] = dataclasses.field(default_factory=dict)
    log_records: int = 0
    seconds: float = 0.0
    #: Operations this recovery moved to the dead-letter file.
    dead_lettered: list[DeadLetter] = dataclasses.field(default_factory=list)
    #: Dead letters waiting for an operator after this recovery (retry or discard them).
    dead_letters: int = 0
    #: The error behind each entry of ``failed_stores``.
    errors: dict[str, BaseException] = dataclasses.field(default_factory=dict, repr=False, compare=False)

    @property
    def ok(self) -> bool:
        return not self.failed_stores and not self.dead_letters


@dataclasses.dataclass
class DeadLetterRetry:
    """What ``retry_dead_letters`` did with each dead letter, by id."""

    applied: list[str] = dataclasses.field(default_factory=list)
    #: The store already had this write or a newer one: resolved without applying it.
    superseded: list[str] = dataclasses.field(default_factory=list)
    #: Still refused (left in the dead-letter file unless re-committed), with the reason.
    failed: dict[str, str] = dataclasses.field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failed


@dataclasses.dataclass(eq=False)
class _Pending:
    """A transaction between its decision and the end of its apply."""

    transaction_id: str
    lsn: int
    ops: dict[str, list[Operation]]
    done: bool = False
    error: BaseException | None = None
    #: The stores that failed to apply it, with their errors.
    failed: dict[str, BaseException] = dataclasses.field(default_factory=dict)
    #: The trace context of its commit span (None without an SDK): its applies are children of it.
    trace_context: Any = None


@dataclasses.dataclass(frozen=True)
class _RedoOp:
    lsn: int
    txid: str
    index: int
    record: dict[str, Any]
    op: Operation


class Coordinator:
    """Runs the protocol for one MemoryManager over its named stores and log."""

    def __init__(self, stores: Mapping[str, BaseMemoryStore], log_: CoordinatorLog, *,
                 operation_log: OperationLog | None = None, compact_records: int = 20_000,
                 compact_bytes: int = 64 << 20, apply_attempts: int = 3, commit_delay: float = 0.0003,
                 breakers: Mapping[str, CircuitBreaker] | None = None) -> None:
        self.stores = dict(stores)
        self.log = log_
        self.operation_log = operation_log
        self.compact_records = compact_records
        self.compact_bytes = compact_bytes
        self.apply_attempts = apply_attempts
        self.commit_delay = commit_delay
        self.metrics = Metrics()
        self.tracer = get_tracer()
        #: Every call on a store goes through its monitor: its circuit breaker, latency and
        #: outcome counts, DEBUG line (memsys.observability.calls).
        self.monitors: dict[str, StoreMonitor] = {
            name: StoreMonitor(name, store, (breakers or {}).get(name) or CircuitBreaker(name=name), self.tracer)
            for name, store in self.stores.items()}
        #: Called with each group's operations by store, before and after the stores apply them.
        self.listeners: list[Callable[[dict[str, list[Operation]]], None]] = []
        #: Testing hook: called with each name in STEPS as the protocol passes it.
        self.crash_hook: Callable[[str], None] | None = None
        self._cv = threading.Condition(threading.Lock())
        self._queue: list[_Pending] = []
        self._log_busy = False
        self._exclusive = False
        self._inflight = 0
        self._pending = 0  # decided transactions not yet completed
        self._draining = 0
        self._next_seq = 0
        self._completed_seq = 0
        self._workers: dict[str, _StoreWorker] = {}
        self._last_lsn = 0
        # Every commit with an LSN up to this is applied on every store that is not quarantined. A
        # transaction starts from it, so it conflicts with any commit it might not have seen.
        self._applied_lsn = 0
        # A quarantined store -> the watermark when it was quarantined (it holds every commit up to
        # that). Per store, so one store waiting for recovery does not make rewrites on the others
        # conflict; a transaction that began during a quarantine keeps that store's watermark
        # (_begin_held) even after recovery, since it may have read the store while it lagged.
        self._held: dict[str, int] = {}
        self._begin_held: dict[str, dict[str, int]] = {}
        self._logged_lsn = 0
        self._last_write: dict[tuple[str, str], int] = {}
        self._active: dict[str, int] = {}
        self._quarantined: dict[str, str] = {}
        # Committed operations a store has not applied (it is quarantined, or this manager does not
        # have it): store -> lsn -> (txid, logged operations). Compaction carries them over, and
        # recovery redoes them even when the log is not durable (MemoryLog).
        self._unapplied: dict[str, dict[int, tuple[str, list[dict[str, Any]]]]] = {}
        self._closed = False
        self._thread = threading.local()

    # ------------------------------------------------------------------ clock and bookkeeping

    def _next_lsn(self) -> int:
        """A hybrid logical clock: strictly increasing, close to microseconds since the epoch."""
        self._last_lsn = max(self._last_lsn + 1, time.time_ns() // 1000)
        return self._last_lsn

    def _hook(self, step: str) -> None:
        if self.crash_hook is not None:
            self.crash_hook(step)

    def begin(self, transaction_id: str) -> int:
        with self._cv:
            self._active[transaction_id] = self._applied_lsn
            if self._held:
                self._begin_held[transaction_id] = dict(self._held)
            return self._applied_lsn

    def finish(self, transaction_id: str) -> None:
        with self._cv:
            self._active.pop(transaction_id, None)
            self._begin_held.pop(transaction_id, None)
            if len(self._last_write) > 50_000:
                self._prune()

    def _prune(self) -> None:
        """Forget write marks no open transaction can conflict with (caller holds the lock)."""
        horizon = min([self._applied_lsn, *self._active.values(), *self._held.values(),
                       *(lsn for held in self._begin_held.values() for lsn in held.values())])
        self._last_write = {k: v for k, v in self._last_write.items() if v > horizon}

    def current(self) -> TransactionContext | None:
        return getattr(self._thread, "transaction", None)

    def bind(self, transaction: TransactionContext | None) -> None:
        self._thread.transaction = transaction

    # ------------------------------------------------------------------ commit

    def commit(self, transaction_id: str, start_lsn: int, ops_by_store: Mapping[str, Sequence[Operation]],
               *, check_conflicts: bool = True, stamp: bool = True) -> int:
        """Prepare, decide, apply. Returns the LSN (0 for an empty transaction).

        ``stamp=False`` keeps the items' own versions: for replaying writes committed earlier
        elsewhere (reconciliation, synchronisation), whose versions say when they happened.
        """
        stores = sorted(name for name, ops in ops_by_store.items() if ops)
        if not stores:
            return 0
        with self.tracer.start_as_current_span("memsys.transaction.commit", attributes={
                "memsys.transaction_id": transaction_id, "memsys.stores": stores}) as span:
            prepared: dict[str, list[Operation]] = {}
            for name in stores:
                self._ensure_available(name, transaction_id)
                monitor = self.monitors[name]
                with self.tracer.start_as_current_span("memsys.transaction.prepare", attributes={
                        "memsys.store": name, "memsys.transaction_id": transaction_id}):
                    try:
                        prepared[name] = monitor.call("prepare", self.stores[name].prepare_ops, ops_by_store[name],
                                                      txid=transaction_id)
                    except MemsysError as exc:
                        raise self._abort(transaction_id, name, exc) from exc
            self._hook("after_prepare")
            entry = self._decide(transaction_id, start_lsn, prepared, check_conflicts, stamp)
            entry.trace_context = self.tracer.context()
            span.set_attribute("memsys.lsn", entry.lsn)
            self._run_until_done(entry)
            if isinstance(entry.error, CommitIncompleteError) and entry.failed \
                    and all(_refused_for_good(e) for e in entry.failed.values()):
                entry.error = self._settle(entry)
            if entry.error is not None:
                span.record_exception(entry.error)
                raise entry.error
            self.metrics.incr("committed")
            log.debug("transaction %s committed at lsn %d on %s", transaction_id, entry.lsn, stores)
            return entry.lsn

    def _abort(self, transaction_id: str, name: str, exc: MemsysError, *,
               waiting: bool = False) -> TransactionAbortedError:
        """The error of a transaction rolled back because store ``name`` refused to prepare: its
        breaker was open (fast, nothing reached the store) or the store failed."""
        self.metrics.incr("aborted")
        if isinstance(exc, CircuitBreakerOpenError):
            self.metrics.incr("aborted_circuit_open")
            log.debug("transaction %s aborted: the circuit of store %s is open", transaction_id, name)
            why = f"{'is waiting for recovery and ' if waiting else ''}has its circuit breaker open ({exc})"
        else:
            log.info("transaction %s aborted: prepare failed on %s: %s", transaction_id, name, exc)
            why = f"failed to prepare: {exc}"
        error = TransactionAbortedError(f"transaction {transaction_id} rolled back: store {name!r} {why}",
                                        transaction_id=transaction_id, store=name)
        error.transient = bool(getattr(exc, "transient", False))  # re-running it may succeed
        return error

    def _decide(self, transaction_id: str, start_lsn: int, prepared: dict[str, list[Operation]],
                check_conflicts: bool, stamp: bool = True) -> _Pending:
        with self._cv:
            began_held = self._begin_held.get(transaction_id, {})
            for name, ops in prepared.items():
                if check_conflicts:
                    # What this store surely held when the transaction began (less if it lagged).
                    since = min(start_lsn, self._held.get(name, start_lsn), began_held.get(name, start_lsn))
                    for op in ops:
                        if self._last_write.get((name, op_key(op)), 0) > since:
                            self.metrics.incr("conflicts")
                            raise ConflictError(
                                f"transaction {transaction_id}: {op.item_id!r} on store {name!r} was committed by "
                                "another transaction after this one began; re-run it",
                                transaction_id=transaction_id, store=name, item_id=op.item_id)
            lsn = self._next_lsn()
            stamped = {name: [_stamp(op, lsn) for op in ops] if stamp else list(ops) for name, ops in prepared.items()}
            for name, ops in stamped.items():
                for op in ops:
                    self._last_write[(name, op_key(op))] = lsn
            # Queued, but nothing of it is written yet: the group leader writes its prepare and commit
            # records, and a failed write fails the whole group (no entry outlives a failed write).
            entry = _Pending(transaction_id, lsn, stamped)
            self._queue.append(entry)
            self._pending += 1
            self._cv.notify_all()
        return entry

    # The commit pipeline. One leader at a time writes and syncs the log for every queued
    # transaction (a group), hands each store its share to that store's apply worker, and
    # gives the log to the next leader while its own group is still being applied. Each
    # store's worker applies groups in log order; stores work in parallel, and the next
    # group's log sync overlaps this group's applies. Groups finish in log order.

    def _run_until_done(self, entry: _Pending) -> None:
        with self._cv:
            while not entry.done:
                if not self._log_busy and not self._exclusive and not self._draining and self._queue:
                    self._log_busy = True
                    # Commit delay: while other open transactions are still in their blocks, wait a
                    # moment for them to join this group; every one that does shares the log sync
                    # and the stores' statements.
                    deadline = time.monotonic() + self.commit_delay
                    while len(self._active) > self._pending and time.monotonic() < deadline:
                        self._cv.wait(deadline - time.monotonic())
                    batch, self._queue = self._queue, []
                    seq = self._next_seq
                    self._next_seq += 1
                    self._inflight += 1
                    break
                self._cv.wait()
            else:
                return
        self._run_group(sorted(batch, key=lambda e: e.lsn), seq)

    def _run_group(self, batch: list[_Pending], seq: int) -> None:
        self.metrics.incr("groups")
        self.metrics.observe("group_size", len(batch))
        started = time.perf_counter()
        futures: dict[Future, str] = {}
        failed: dict[str, BaseException] = {}
        logged = False
        try:
            try:
                with self.tracer.start_as_current_span("memsys.transaction.log", attributes={
                        "memsys.group": len(batch), "memsys.transaction_id": batch[0].transaction_id,
                        "memsys.transaction_ids": [e.transaction_id for e in batch]}):
                    records = [{"t": "commit", "lsn": e.lsn, "txid": e.transaction_id,
                                "ops": {n: [encode_op(op) for op in ops] for n, ops in e.ops.items()}}
                               for e in batch]
                    self.log.append([{"t": "prepare", "lsn": e.lsn, "txid": e.transaction_id,
                                      "stores": sorted(e.ops)} for e in batch], sync=False)
                    self._hook("after_log_write")
                    self.log.append(records, sync=True)
                logged = True
                by_store: dict[str, list[Operation]] = defaultdict(list)
                for e in batch:
                    for name, ops in e.ops.items():
                        by_store[name].extend(ops)
                self._notify(by_store)
                # Handed to the workers before the log is released, so every store sees groups in log order.
                futures = {self._worker(name).submit(by_store[name], [e for e in batch if name in e.ops]): name
                           for name in sorted(by_store)}
            except Exception as exc:
                # Nothing of the group is in the log (an append is all or nothing, cut back on
                # failure), so none of it can ever be redone: every transaction is rolled back.
                cause: BaseException = exc
                if isinstance(exc, OSError):
                    cause = os_error(exc, "writing the coordinator log", path=self.log.path)
                    cause.__cause__ = exc
                self.metrics.incr("aborted", len(batch))
                log.warning("%d transactions rolled back: the coordinator log could not be written: %s",
                            len(batch), cause)
                for e in batch:
                    e.error = TransactionAbortedError(
                        f"transaction {e.transaction_id} rolled back, nothing was applied: the coordinator log "
                        f"could not be written: {cause}", transaction_id=e.transaction_id)
                    e.error.__cause__ = cause
                    # Retrying may help exactly when the log's failure was transient (a full disk).
                    e.error.transient = bool(getattr(cause, "transient", False))
                return
            finally:
                with self._cv:
                    if logged:
                        self._logged_lsn = batch[-1].lsn
                    self._log_busy = False
                    self._cv.notify_all()
            self._hook("after_log_sync")
            for n, future in enumerate(as_completed(futures)):
                error = future.exception()
                if error is not None:
                    failed[futures[future]] = error
                if n == 0:
                    self._hook("after_first_apply")
            if failed:
                by_lsn = {r["lsn"]: r for r in records}
                with self._cv:
                    for name in failed:
                        self._remember(name, [(e.lsn, e.transaction_id, by_lsn[e.lsn]["ops"][name])
                                              for e in batch if name in e.ops])
            self._hook("after_apply")
            self._notify(by_store)  # again: a reader may have cached an old value during the apply
            self._finish_applied(batch, failed)
            self._hook("after_end")
        except BaseException as exc:  # a simulated crash: every waiter learns it, as a process would
            for e in batch:
                if e.error is None:
                    e.error = exc
            raise
        finally:
            wait(futures)  # no apply outlives its group
            self._complete(batch, seq, started)
        self._maybe_compact()

    def _notify(self, by_store: dict[str, list[Operation]]) -> None:
        for listener in self.listeners:
            try:
                listener(by_store)
            except Exception:
                log.warning("a commit listener failed", exc_info=True)

    def _finish_applied(self, batch: list[_Pending], failed: dict[str, BaseException]) -> None:
        ended = [e.lsn for e in batch if not set(e.ops) & set(failed)]
        if ended:
            self.log.note_ended(ended)
        for e in batch:
            broken = sorted(set(e.ops) & set(failed))
            if broken:
                e.failed = {name: failed[name] for name in broken}
                cause = failed[broken[0]]
                e.error = CommitIncompleteError(
                    f"transaction {e.transaction_id} is committed, but store {broken[0]!r} has not applied it yet "
                    f"({type(cause).__name__}: {cause}); recovery will complete it", transaction_id=e.transaction_id,
                    store=broken[0])
                e.error.__cause__ = cause
        if self.operation_log is not None:
            try:
                self.operation_log.append(batch)
            except Exception:
                log.warning("could not write the operation log", exc_info=True)

    def _complete(self, batch: list[_Pending], seq: int, started: float) -> None:
        """Finish groups in log order, so "applied up to" only ever covers whole prefixes."""
        with self._cv:
            while self._completed_seq != seq:
                self._cv.wait()
            self._completed_seq += 1
            self._inflight -= 1
            # Applied on every store but quarantined ones (whose own watermark is held), or never logged.
            if all(e.error is None or isinstance(e.error, TransactionAbortedError)
                   or (isinstance(e.error, CommitIncompleteError) and e.failed and set(e.failed) <= set(self._held))
                   for e in batch):
                self._applied_lsn = max(self._applied_lsn, batch[-1].lsn)
            for e in batch:
                e.done = True
            self._pending -= len(batch)
            self._cv.notify_all()
        self.metrics.observe("group_seconds", time.perf_counter() - started)

    @contextlib.contextmanager
    def _leadership(self) -> Iterator[None]:
        """Exclusive use of the stores and the log (recovery, compaction): no group in flight."""
        with self._cv:
            self._draining += 1  # no new group starts while this waits for the running ones
            try:
                while self._exclusive or self._log_busy or self._inflight:
                    self._cv.wait()
            finally:
                self._draining -= 1
            self._exclusive = True
        try:
            yield
        finally:
            with self._cv:
                self._exclusive = False
                self._cv.notify_all()

    def _worker(self, name: str) -> _StoreWorker:
        worker = self._workers.get(name)
        if worker is None:
            worker = self._workers[name] = _StoreWorker(self, name)
        return worker

    def _apply_with_retry(self, name: str, ops: list[Operation], entries: Sequence[_Pending] = ()) -> None:
        if name in self._quarantined:  # an earlier group failed here: later ones must wait for recovery
            raise StoreUnavailableError(f"store {name!r} is quarantined: {self._quarantined[name]}", store=name)
        txids = [e.transaction_id for e in entries]
        txid = ",".join(txids)
        monitor = self.monitors[name]

        def attempt(ops: list[Operation], durable: bool) -> None:
            monitor.call("apply", self.stores[name].apply_prepared, ops, durable=durable, txid=txid, breaker="none")

        # Applies are idempotent, so transient failures are retried (10 ms, then 40 ms, ...). The
        # breaker admits the apply and counts its outcome once, retries included: an open circuit
        # quarantines the store at once (recovery redoes the apply), and one failing apply is one failure.
        retried = retry_with_backoff(self.apply_attempts, initial_backoff=0.01, backoff_multiplier=4,
                                     jitter=0.0)(attempt)

        def apply(ops: list[Operation], durable: bool) -> None:
            monitor.guard(retried, ops, durable, trips=_trips_breaker)
        # A child of its transaction's commit span (the first of the group's, linked to the others').
        contexts = [e.trace_context for e in entries if e.trace_context is not None]
        with self.tracer.start_as_current_span(
                "memsys.transaction.apply", attributes={"memsys.store": name,
                                                        "memsys.transaction_id": txids[0] if txids else "",
                                                        "memsys.transaction_ids": txids},
                parent=contexts[0] if contexts else None, links=contexts[1:]):
            try:
                apply(ops, durable=not self.log.durable)
            except MemsysError as exc:
                self._quarantine(name, f"{type(exc).__name__}: {exc}")
                raise

    def _quarantine(self, name: str, reason: str) -> None:
        self.metrics.incr("quarantined")
        log.error("store %s failed to apply committed transactions and is quarantined until recovery: %s",
                  name, reason)
        with self._cv:
            self._quarantined[name] = reason
            self._held.setdefault(name, self._applied_lsn)

    def _remember(self, name: str, commits: Sequence[tuple[int, str, list[dict[str, Any]]]]) -> None:
        """Keep committed operations ``name`` has not applied (caller holds ``_cv``)."""
        unapplied = self._unapplied.setdefault(name, {})
        for lsn, txid, records in commits:
            unapplied.setdefault(lsn, (txid, list(records)))

    def _ensure_available(self, name: str, transaction_id: str) -> None:
        if name not in self._quarantined:
            return
        breaker = self.monitors[name].breaker
        if breaker.state is CircuitState.OPEN:  # fail fast: no recovery attempt, no log line above DEBUG
            try:
                breaker.admit()
            except CircuitBreakerOpenError as exc:
                self.monitors[name]._stats("recover").record("rejected", None)
                raise self._abort(transaction_id, name, exc, waiting=True) from exc
            breaker.release_probe()  # the timeout ran out meanwhile: the recovery below is the probe
        report = self.recover(stores=[name], guarded=True)
        if name in report.failed_stores:
            cause = report.errors.get(name) or StoreUnavailableError(report.failed_stores[name], store=name)
            if isinstance(cause, CircuitBreakerOpenError):
                raise self._abort(transaction_id, name, cause, waiting=True) from cause
            self.metrics.incr("aborted")
            error = TransactionAbortedError(
                f"transaction {transaction_id} rolled back: store {name!r} is waiting for recovery "
                f"({report.failed_stores[name]})", transaction_id=transaction_id, store=name)
            error.transient = bool(getattr(cause, "transient", False))
            raise error from cause

    def _settle(self, entry: _Pending) -> BaseException | None:
        """A store refused ``entry`` for good at apply: isolate the refused operations now (recovery
        of that store), rather than leaving the store quarantined until the next transaction.

        Returns the transaction's outcome: None if recovery applied it after all, a
        CommitIncompleteError naming the dead letters if its operations were set aside, or the
        original error if the store could not be recovered.
        """
        names = sorted(entry.failed)
        try:
            with self._leadership():
                with self._cv:
                    pending = [n for n in names if n in self._quarantined]
                if pending:
                    self._recover(pending)
            with self._cv:
                if any(n in self._quarantined for n in names):
                    return entry.error
            letters = [d for d in self.log.dead_letters.list() if d.txid == entry.transaction_id]
        except Exception:
            log.warning("transaction %s: recovery after a failed apply failed", entry.transaction_id, exc_info=True)
            return entry.error
        if not letters:
            return None  # recovery applied it everywhere
        first = letters[0]
        error = CommitIncompleteError(
            f"transaction {entry.transaction_id} is committed, but store {first.store!r} refuses "
            f"{len(letters)} of its operations for good ({first.error}); they are in the dead-letter file as "
            f"{', '.join(d.id for d in letters)}: remove the cause, then MemoryManager.retry_dead_letters(), "
            "or discard_dead_letters()", transaction_id=entry.transaction_id, store=first.store)
        error.__cause__ = entry.failed.get(first.store)
        return error

    @property
    def quarantined(self) -> dict[str, str]:
        return dict(self._quarantined)

    # ------------------------------------------------------------------ writes outside a transaction

    def write_outside_transaction(self, store: BaseMemoryStore, ops: list[Operation], *, stamp: bool = True) -> None:
        """A write on a managed store with no transaction open: a transaction of its own."""
        current = self.current()
        if current is not None:
            raise TransactionStateError(
                f"store {store.name!r} is not part of transaction {current.transaction_id} "
                f"(stores {current.stores}); add it to with_transaction([...])",
                transaction_id=current.transaction_id, store=store.name)
        transaction_id = uuid.uuid4().hex
        start = self.begin(transaction_id)
        try:
            # A blind write conflicts with nothing; it still marks its ids for open transactions.
            self.commit(transaction_id, start, {store.name: ops}, check_conflicts=False, stamp=stamp)
        finally:
            self.finish(transaction_id)

    # ------------------------------------------------------------------ recovery and compaction

    def recover(self, stores: Sequence[str] | None = None, *, guarded: bool = False) -> RecoveryReport:
        """Redo every commit after the last checkpoint, in LSN order, on ``stores`` (default all).

        ``guarded``: each store's circuit breaker admits its recovery (automatic recovery before a
        transaction); otherwise it is an operator's explicit call, made whatever the circuit says,
        and a store it completes has its circuit closed."""
        with self._leadership():
            return self._recover(stores, guarded=guarded)

    def _recover(self, stores: Sequence[str] | None, *, guarded: bool = True) -> RecoveryReport:
        """``recover`` for a caller that holds leadership."""
        started = time.perf_counter()
        report = RecoveryReport()
        with self.tracer.start_as_current_span("memsys.recovery"):
            scan = self.log.scan()
            report.log_records = scan.records
            report.redone = [c["txid"] for c in scan.commits]
            report.completed = [c["txid"] for c in scan.unended]
            report.undone = [p["txid"] for p in scan.undecided]
            targets = list(stores) if stores is not None else sorted(self.stores)
            logged = {name for c in scan.commits for name in c["ops"]}
            with self._cv:
                self._last_lsn = max(self._last_lsn, scan.max_lsn)
                self._logged_lsn = max(self._logged_lsn, scan.max_lsn)
                for name in sorted((logged | set(self._unapplied)) - set(self.stores)):
                    # Kept (and carried by compaction) until a manager with this store completes it.
                    report.failed_stores[name] = ("the log holds committed writes for a store this manager does "
                                                  "not have")
                    self._remember(name, [(c["lsn"], c["txid"], c["ops"][name])
                                          for c in scan.commits if name in c["ops"]])
            for name in targets:
                commits = self._commits_for(name, scan.commits)
                try:
                    dead = self.monitors[name].call("recover", self._redo, name, commits,
                                                    breaker="guard" if guarded else "force", trips=_trips_breaker)
                    report.dead_lettered.extend(dead or ())
                except Exception as exc:
                    report.failed_stores[name] = f"{type(exc).__name__}: {exc}"
                    report.errors[name] = exc
                    with self._cv:
                        self._quarantined[name] = report.failed_stores[name]
                        self._held.setdefault(name, self._applied_lsn)
                        self._remember(name, commits)
                    continue
                with self._cv:
                    self._quarantined.pop(name, None)
                    self._held.pop(name, None)
                    self._unapplied.pop(name, None)
            with self._cv:
                # No group is in flight: every store not quarantined holds every logged commit
                # (unless it lacks some without being quarantined: then wait for its recovery).
                if not (set(self._unapplied) & set(self.stores)) - set(self._held):
                    self._applied_lsn = max(self._applied_lsn, self._logged_lsn)
            if stores is None or report.dead_lettered:
                # Safe whatever failed: compaction carries every commit a store still lacks.
                try:
                    self._checkpoint()
                except Exception:
                    log.warning("log compaction after recovery failed; the log keeps every record", exc_info=True)
            try:
                report.dead_letters = len(self.log.dead_letters.list())
            except MemsysError as exc:
                report.failed_stores["(dead letters)"] = f"{type(exc).__name__}: {exc}"
        report.seconds = time.perf_counter() - started
        self.metrics.incr("recoveries")
        if report.redone or report.undone or report.failed_stores or report.dead_lettered:
            log.info("recovery: redid %d transactions (%d not yet ended), presumed %d aborted, failed stores %s, "
                     "dead-lettered %d operations, in %.3fs", len(report.redone), len(report.completed),
                     len(report.undone), report.failed_stores or "none", len(report.dead_lettered), report.seconds)
        return report

    def _commits_for(self, name: str, commits: list[dict[str, Any]]) -> list[tuple[int, str, list[dict[str, Any]]]]:
        """(lsn, txid, logged operations) of every commit ``name`` may lack: the log's, and those kept
        in memory for it (all there is when the log is not durable)."""
        merged = {c["lsn"]: (c["txid"], c["ops"][name]) for c in commits if name in c["ops"]}
        with self._cv:
            for lsn, value in self._unapplied.get(name, {}).items():
                merged.setdefault(lsn, value)
        return [(lsn, txid, records) for lsn, (txid, records) in sorted(merged.items())]

    def _redo(self, name: str, commits: list[tuple[int, str, list[dict[str, Any]]]]) -> list[DeadLetter]:
        """Apply ``commits`` to store ``name`` in order, as logged (versions are not stamped again).

        Transient failures are retried. An operation the store refuses for good is isolated and
        dead-lettered (``_apply_isolating``); anything else raises and the store stays quarantined.
        Operations already waiting in the dead-letter file are skipped.
        """
        store = self.stores[name]
        monitor = self.monitors[name]

        def redo_apply(ops: list[Operation], durable: bool) -> None:  # the enclosing "recover" call holds the breaker
            monitor.call("apply", store.apply_prepared, ops, durable=durable, breaker="none")

        apply = retry_with_backoff(self.apply_attempts, initial_backoff=0.01, backoff_multiplier=4,
                                   jitter=0.0)(redo_apply)
        waiting = self.log.dead_letters.ids(name)
        dead: list[DeadLetter] = []
        batch: list[_RedoOp] = []
        for lsn, txid, records in commits:
            for index, record in enumerate(records):
                if f"{name}/{lsn}/{index}" in waiting:
                    continue
                try:
                    op = decode_op(record)
                except (MemsysError, KeyError, TypeError, ValueError, AttributeError) as exc:
                    # Checksummed, so not damage: a record today's validation refuses. It can never apply.
                    dead.append(self._bury(name, lsn, txid, index, record,
                                           f"the logged operation cannot be read back: {type(exc).__name__}: {exc}"))
                    continue
                batch.append(_RedoOp(lsn, txid, index, record, op))
            if len(batch) >= REDO_BATCH:
                self._apply_isolating(name, apply, batch, dead)
                batch = []
        if batch:
            self._apply_isolating(name, apply, batch, dead)
        monitor.call("flush", store.flush, breaker="none")
        return dead

    def _apply_isolating(self, name: str, apply: Callable[..., None], entries: list[_RedoOp],
                         dead: list[DeadLetter]) -> None:
        """Apply ``entries`` in order; bisect a batch the store refuses for good down to the
        operations it refuses, apply the others, and dead-letter those."""
        try:
            apply([e.op for e in entries], durable=False)
            return
        except MemsysError as exc:
            if not _refused_for_good(exc):
                raise
        if len(entries) > 1:
            middle = len(entries) // 2
            self._apply_isolating(name, apply, entries[:middle], dead)
            self._apply_isolating(name, apply, entries[middle:], dead)
            return
        # One operation refused for good. Poison only if the store takes writes at all (an empty
        # apply) and still refuses this one: a store that refuses every write (a failing disk, an
        # engine gone bad) stays quarantined instead of being emptied into the dead-letter file.
        apply([], durable=False)
        try:
            apply([entries[0].op], durable=False)
            return
        except MemsysError as again:
            if not _refused_for_good(again):
                raise
            entry = entries[0]
            dead.append(self._bury(name, entry.lsn, entry.txid, entry.index, entry.record,
                                   f"{type(again).__name__}: {again}"))

    def _bury(self, name: str, lsn: int, txid: str, index: int, record: dict[str, Any], error: str) -> DeadLetter:
        """Move one operation to the dead-letter file (fsynced before this returns) with an audit line."""
        letter = DeadLetter(id=f"{name}/{lsn}/{index}", store=name, txid=txid, lsn=lsn, op=record, error=error,
                            time=time.time())
        if self.log.dead_letters.add([letter]):
            self.metrics.incr("dead_lettered")
            log.error("DEAD LETTER %s: store %s refuses %s of item %r (transaction %s, lsn %d) for good: %s; the "
                      "operation is kept in %s; the store goes on without it. Remove the cause, then "
                      "MemoryManager.retry_dead_letters([%r]), or discard_dead_letters([%r])", letter.id, name,
                      letter.kind, letter.item_id, txid, lsn, error, self.log.dead_letters.path or "memory",
                      letter.id, letter.id)
        return letter

    def _checkpoint(self) -> None:
        """Flush every store, then replace the log by a checkpoint followed by every commit some store
        still lacks (caller holds leadership). A store that cannot flush stops the compaction."""
        for name in sorted(self.stores):
            self.monitors[name].call("flush", self.stores[name].flush, breaker="none")
        with self._cv:
            carried: dict[int, dict[str, Any]] = {}
            for name, unapplied in sorted(self._unapplied.items()):
                for lsn, (txid, records) in unapplied.items():
                    carried.setdefault(lsn, {"t": "commit", "lsn": lsn, "txid": txid, "ops": {}})["ops"][name] = records
            checkpoint_lsn = max(self._last_lsn, self._logged_lsn, self._applied_lsn)
        self.log.compact(checkpoint_lsn, [carried[lsn] for lsn in sorted(carried)])
        self.metrics.incr("checkpoints")

    def _maybe_compact(self) -> None:
        if not (self.log.records_since_checkpoint > self.compact_records or self.log.growth() > self.compact_bytes):
            return
        with self._leadership():
            if self.log.records_since_checkpoint <= self.compact_records and self.log.growth() <= self.compact_bytes:
                return  # another thread compacted while this one waited
            try:
                self._checkpoint()
            except Exception:
                log.warning("log compaction failed; the log keeps every record", exc_info=True)

    def close(self) -> None:
        """Complete quarantined stores if possible, flush the stores and checkpoint the log (so the
        next open has nothing to redo but what a store still lacks), and release the log."""
        if self._closed:
            return
        self._closed = True
        try:
            with self._leadership():
                try:
                    with self._cv:
                        pending = sorted(n for n in self._quarantined if n in self.stores)
                    if pending:
                        self._recover(pending)
                    self._checkpoint()
                except Exception:
                    log.warning("checkpoint at close failed; the log keeps every record for the next open",
                                exc_info=True)
                with self._cv:
                    lost = {n: sorted(u) for n, u in self._unapplied.items() if u} if not self.log.durable else {}
                if lost:
                    log.error("closing without a transaction log: committed writes never reached store(s) %s "
                              "(lsns %s) and are lost with this process", sorted(lost), lost)
                self.log.close()
        finally:
            for worker in self._workers.values():
                worker.stop()

    # ------------------------------------------------------------------ dead letters

    def dead_letters(self, store: str | None = None) -> list[DeadLetter]:
        return self.log.dead_letters.list(store)

    def _select_letters(self, ids: Sequence[str] | None) -> list[DeadLetter]:
        letters = self.log.dead_letters.list()
        if ids is None:
            return letters
        if isinstance(ids, str):
            ids = [ids]
        wanted = list(dict.fromkeys(ids))
        known = {d.id: d for d in letters}
        unknown = [i for i in wanted if i not in known]
        if unknown:
            raise InvalidInputError(f"no dead letters {unknown}; waiting are {sorted(known)}")
        return sorted((known[i] for i in wanted), key=lambda d: (d.lsn, d.id))

    def retry_dead_letters(self, ids: Sequence[str] | None = None) -> DeadLetterRetry:
        """Apply dead letters (default: all) again, each as a transaction of its own that keeps the
        item's version; one the store already has in this or a newer version is resolved without
        applying (never back in time). Refused again: it stays (or is dead-lettered afresh)."""
        result = DeadLetterRetry()
        for letter in self._select_letters(ids):
            store = self.stores.get(letter.store)
            if store is None:
                result.failed[letter.id] = f"this manager has no store {letter.store!r}"
                continue
            try:
                op = decode_op(letter.op)
                if self._superseded(store, op, letter):
                    self.log.dead_letters.remove([letter.id])
                    result.superseded.append(letter.id)
                    log.warning("dead letter %s resolved: store %s already has this write or a newer one",
                                letter.id, letter.store)
                    continue
                self.write_outside_transaction(store, [op], stamp=False)
            except CommitIncompleteError as exc:
                # Committed again under a new LSN: recovery completes it or dead-letters it afresh.
                self.log.dead_letters.remove([letter.id])
                result.failed[letter.id] = str(exc)
                continue
            except (MemsysError, KeyError, TypeError, ValueError) as exc:
                result.failed[letter.id] = f"{type(exc).__name__}: {exc}"
                continue
            self.log.dead_letters.remove([letter.id])
            result.applied.append(letter.id)
            log.warning("dead letter %s retried: applied to store %s", letter.id, letter.store)
        return result

    @staticmethod
    def _superseded(store: BaseMemoryStore, op: Operation, letter: DeadLetter) -> bool:
        if isinstance(op, Put):
            current = store.retrieve(op.item_id)
            return current is not None and current.version >= op.item.version
        if isinstance(op, Delete):
            current = store.retrieve(op.item_id)
            return current is None or current.version > letter.lsn
        return False

    def discard_dead_letters(self, ids: Sequence[str]) -> list[DeadLetter]:
        """Give up on the named dead letters for good (an explicit operator decision, logged)."""
        if ids is None or not list(ids):
            raise InvalidInputError("name the dead letters to discard (their ids, from dead_letters())")
        letters = self._select_letters(ids)
        self.log.dead_letters.remove([d.id for d in letters])
        for letter in letters:
            self.metrics.incr("dead_letters_discarded")
            log.error("dead letter discarded by the operator; store %s will never apply it: %s", letter.store,
                      letter.describe())
        return letters


class _StoreWorker:
    """Applies one store's share of each group, in the order the groups were logged."""

    def __init__(self, coordinator: Coordinator, name: str) -> None:
        self._coordinator = coordinator
        self._name = name
        self._queue: queue.SimpleQueue[tuple[list[Operation], Sequence[_Pending], Future] | None] = \
            queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=f"memsys-apply-{name}", daemon=True)
        self._thread.start()

    def submit(self, ops: list[Operation], entries: Sequence[_Pending] = ()) -> Future:
        future: Future = Future()
        self._queue.put((ops, entries, future))
        return future

    def _run(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            ops, entries, future = job
            try:
                self._coordinator._apply_with_retry(self._name, ops, entries)
            except BaseException as exc:
                future.set_exception(exc)
            else:
                future.set_result(None)

    def stop(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=30)


def _trips_breaker(exc: BaseException) -> bool:
    """Whether an apply or recovery error says the store is unwell (and so counts toward its circuit
    breaker): an operation the store refuses for good says nothing about the store (it is isolated
    and dead-lettered while the store goes on)."""
    return not _refused_for_good(exc)


def _stamp(op: Operation, lsn: int) -> Operation:
    """The committed form of an operation: Puts carry the LSN as version and its time as updated_at."""
    if not isinstance(op, Put):
        return op
    item = op.item
    stamped = trusted_item(item.id, item.content, item.memory_type.value, item.metadata,  # type: ignore[arg-type]
                           item.created_at, from_epoch_us(lsn), lsn)  # type: ignore[arg-type]
    return Put(stamped, op.embedding)


class TransactionContext:
    """``with manager.with_transaction(["lmdb", "duckdb"]) as tx:`` — all or nothing.

    Calls on the participating adapters made in the block (on this thread) join
    the transaction. Leaving the block normally commits on every store or none;
    an exception rolls every store back and is re-raised. ``commit()`` and
    ``rollback()`` may also be called explicitly inside the block.
    """

    def __init__(self, coordinator: Coordinator, stores: Sequence[str]) -> None:
        unknown = [s for s in stores if s not in coordinator.stores]
        if unknown:
            raise TransactionStateError(f"unknown stores {unknown}; this manager has {sorted(coordinator.stores)}")
        if not stores:
            raise TransactionStateError("a transaction needs at least one store")
        self._coordinator = coordinator
        self.stores = list(dict.fromkeys(stores))
        self.transaction_id = uuid.uuid4().hex
        self.state = "new"
        self.start_lsn = 0
        #: The commit's LSN, which is also the version of every item it stored.
        self.lsn: int | None = None
        self._begun: list[str] = []

    @property
    def adapters(self) -> dict[str, BaseMemoryStore]:
        return {name: self._coordinator.stores[name] for name in self.stores}

    def __enter__(self) -> TransactionContext:
        self.begin()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any) -> bool:
        if self.state != "active":
            return False
        if exc_type is None:
            self.commit()
        else:
            self.rollback()
        return False

    def begin(self) -> None:
        if self.state != "new":
            raise TransactionStateError(f"transaction {self.transaction_id} was already used ({self.state})",
                                        transaction_id=self.transaction_id)
        if self._coordinator.current() is not None:
            raise TransactionStateError("a transaction is already open on this thread; nested transactions "
                                        "are not supported", transaction_id=self.transaction_id)
        try:
            for name in self.stores:
                self._coordinator.stores[name].begin_transaction(self.transaction_id)
                self._begun.append(name)
        except BaseException:
            self._release()
            raise
        self.start_lsn = self._coordinator.begin(self.transaction_id)
        self._coordinator.bind(self)
        self.state = "active"

    def _check_active(self) -> None:
        if self.state != "active":
            raise TransactionStateError(f"transaction {self.transaction_id} is {self.state}",
                                        transaction_id=self.transaction_id)

    def commit(self) -> int:
        """Commit on every store or none; returns the LSN (the version stamped on stored items)."""
        self._check_active()
        ops = {name: self._coordinator.stores[name].transaction_ops(self.transaction_id) for name in self.stores}
        try:
            self.lsn = self._coordinator.commit(self.transaction_id, self.start_lsn, ops)
            self.state = "committed"
        except CommitIncompleteError:
            self.state = "committed"
            raise
        except BaseException:
            self.state = "failed"
            raise
        finally:
            self._release()
        return self.lsn

    def rollback(self) -> None:
        """Discard every buffered write; no store ever saw them."""
        self._check_active()
        self.state = "rolled_back"
        self._release()

    def _release(self) -> None:
        for name in self._begun:
            try:
                self._coordinator.stores[name].rollback(self.transaction_id)  # ends the buffer
            except MemsysError:
                pass
        self._begun = []
        if self._coordinator.current() is self:
            self._coordinator.bind(None)
        self._coordinator.finish(self.transaction_id)

    # --- the explicit handle

    def store(self, store: str, item: Any) -> str:
        return self._adapter(store).store(item)

    def delete(self, store: str, item_id: str) -> bool:
        return self._adapter(store).delete(item_id)

    def retrieve(self, store: str, item_id: str) -> Any:
        return self._adapter(store).retrieve(item_id)

    def _adapter(self, store: str) -> BaseMemoryStore:
        self._check_active()
        if store not in self.stores:
            raise TransactionStateError(f"store {store!r} is not part of transaction {self.transaction_id}",
                                        transaction_id=self.transaction_id, store=store)
        return self._coordinator.stores[store]

    def __repr__(self) -> str:
        return f"TransactionContext(id={self.transaction_id}, stores={self.stores}, state={self.state})"
