"""What every adapter shares: validation, error translation, transactions, snapshots.

An adapter implements a handful of primitives on its engine (``_get``,
``_scan``, ``_apply``, ``_close`` and optionally ``_search``, ``_count``,
``_flush``). Everything public is built here, once:

* every public call validates its input before touching the engine, and runs
  the engine under ``_call``, the single place where driver exceptions become
  memsys errors (``raise ... from exc``);
* ``prepare_ops`` / ``apply_prepared`` make the adapter a two-phase-commit
  participant: prepare validates and completes without changing the store;
  apply is atomic when the engine is (``atomic_apply``), and otherwise records
  per-item before-images and restores them if the apply fails part way;
* begin_transaction / prepare_commit / commit / rollback buffer the calling
  thread's writes in a WriteSet, so other threads never see them.

Each adapter kind logs to its own logger, ``memsys.adapters.<backend>``. At DEBUG, every
engine call under ``_call`` logs its store, operation, duration, outcome and transaction id,
unless a MemoryManager's monitor made the call and logs it already
(``memsys.observability.calls``); with DEBUG off this costs one cached level check.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, ClassVar, TypeVar

from memsys.domain.errors import (
    InvalidInputError,
    InvalidMemoryItemError,
    MemsysError,
    StoreClosedError,
    StoreError,
    TransactionStateError,
    UnsupportedCapabilityError,
)
from memsys.domain.model import MemoryItem, check_id
from memsys.durable import PathLock
from memsys.observability.calls import in_monitored_call
from memsys.domain.operations import Delete, Operation, Put, Relate, Unrelate
from memsys.domain.query import MemoryQuery
from memsys.domain.writeset import ABSENT, WriteSet
from memsys.ports import Capability

log = logging.getLogger("memsys.adapters")
T = TypeVar("T")


class _LocalTransaction:
    __slots__ = ("id", "thread", "writes", "prepared")

    def __init__(self, transaction_id: str) -> None:
        self.id = transaction_id
        self.thread = threading.get_ident()
        self.writes = WriteSet()
        self.prepared: list[Operation] | None = None


class BaseMemoryStore:
    #: Short backend name used in errors and as the default store name.
    backend: ClassVar[str] = "base"
    capabilities: ClassVar[frozenset[Capability]] = frozenset({Capability.TRANSACTIONS, Capability.SNAPSHOT})
    #: True when ``_apply`` is all-or-nothing (native transaction, one atomic file write);
    #: otherwise apply_prepared keeps before-images and compensates a partial apply. False by
    #: default: an adapter must claim atomicity, never inherit it (a one-op-at-a-time ``_apply``
    #: that forgot to say so would leave a torn batch behind).
    atomic_apply: ClassVar[bool] = False
    #: Glob patterns (under ``path``) of runtime files the engine re-creates at open, such as
    #: lock files; the kit lets them change when it checks that corrupt data is never overwritten.
    scratch_files: ClassVar[tuple[str, ...]] = ()
    #: True when two openers of one path would lose writes (the engine keeps state in this
    #: process, or has no lock of its own): ``_opening()`` then takes an OS lock on the path,
    #: and a second opener gets StoreLockedError naming the holder. False where the engine is
    #: safely shared between processes (LMDB).
    exclusive_path: ClassVar[bool] = True
    #: The transaction coordinator of the MemoryManager that owns this store, if any.
    _coordinator: Any = None
    _path_lock: PathLock | None = None

    def __init__(self, path: str | os.PathLike[str] | None, *, name: str | None = None) -> None:
        self.path = None if path is None else os.fspath(path)
        self.name = name or self.backend
        self._lock = threading.RLock()
        self._closed = False
        self._local = threading.local()
        self._transactions: dict[str, _LocalTransaction] = {}
        self._pending_compensations: list[list[Operation]] = []

    # ------------------------------------------------------------------ opening

    @contextlib.contextmanager
    def _opening(self) -> Iterator[None]:
        """Wrap an adapter's open: lock the path first (where ``exclusive_path``), and release
        the lock again if the open fails, so a refused open leaves nothing held."""
        if self.path is not None and self.exclusive_path and self._path_lock is None:
            self._path_lock = PathLock.acquire(self.path, owner=f"{type(self).__name__} {self.name!r}",
                                               store=self.name)
        try:
            yield
        except BaseException:
            self._release_path_lock()
            raise

    def _release_path_lock(self) -> None:
        lock, self._path_lock = self._path_lock, None
        if lock is not None:
            lock.release()

    # ------------------------------------------------------------------ primitives

    def _get(self, item_id: str) -> MemoryItem | None:
        raise NotImplementedError

    def _scan(self) -> Iterable[MemoryItem]:
        raise NotImplementedError

    def _apply(self, ops: Sequence[Operation], durable: bool) -> None:
        raise NotImplementedError

    def _close(self) -> None:
        raise NotImplementedError

    def _get_many(self, item_ids: Sequence[str]) -> dict[str, MemoryItem]:
        found = {}
        for item_id in item_ids:
            item = self._get(item_id)
            if item is not None:
                found[item_id] = item
        return found

    def _search(self, query: MemoryQuery) -> list[MemoryItem]:
        return query.select(self._scan())

    def _count(self) -> int:
        return sum(1 for _ in self._scan())

    def _flush(self) -> None:
        """Make every applied write durable (after ``_apply(..., durable=False)``)."""

    def _current_state(self, item_id: str) -> Put | None:
        """The item as a Put that would recreate it (vector stores add the embedding)."""
        item = self._get(item_id)
        return None if item is None else Put(item)

    def _prepare_op(self, op: Operation) -> Operation:
        """Validate one operation; subclasses complete it (embeddings) or check more."""
        return op

    # ------------------------------------------------------------------ error translation

    def _translate(self, exc: Exception, operation: str) -> MemsysError:
        """Map a driver exception to a memsys error. Adapters override to classify."""
        return StoreError(f"{self.name}: {operation} failed: {type(exc).__name__}: {exc}", store=self.name)

    @functools.cached_property
    def _log(self) -> logging.Logger:
        """This adapter kind's logger: ``memsys.adapters.<backend>``."""
        return logging.getLogger(f"{log.name}.{self.backend}")

    def _call(self, operation: str, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn`` on the engine under the store lock; the one place driver errors are translated."""
        if self._log.isEnabledFor(logging.DEBUG) and not in_monitored_call():
            return self._logged_call(operation, fn, *args)
        return self._engine_call(operation, fn, *args)

    def _logged_call(self, operation: str, fn: Callable[..., T], *args: Any) -> T:
        """``_call`` with its DEBUG line: store, operation, duration, outcome, transaction id."""
        tx = self._bound_transaction()
        current = self._coordinator.current() if tx is None and self._coordinator is not None else None
        txid = tx.id if tx is not None else current.transaction_id if current is not None else None
        started = time.perf_counter()
        outcome, error = "ok", ""
        try:
            return self._engine_call(operation, fn, *args)
        except BaseException as exc:
            outcome, error = "error", f" error={type(exc).__name__}: {exc}"
            raise
        finally:
            seconds = time.perf_counter() - started
            self._log.debug("store=%s op=%s duration_ms=%.3f outcome=%s txid=%s%s", self.name, operation,
                            seconds * 1000.0, outcome, txid or "-", error,
                            extra={"memsys_store": self.name, "memsys_operation": operation,
                                   "memsys_duration": seconds, "memsys_outcome": outcome,
                                   "memsys_transaction_id": txid})

    def _engine_call(self, operation: str, fn: Callable[..., T], *args: Any) -> T:
        if self._closed:
            raise StoreClosedError(f"{self.name}: {operation} on a closed store ({self.path})")
        try:
            with self._lock:
                if self._closed:  # close() ran while this call waited for the lock
                    raise StoreClosedError(f"{self.name}: {operation} on a closed store ({self.path})")
                return fn(*args)
        except MemsysError:
            raise
        except Exception as exc:
            if self._closed:  # the engine failed because the store was closed under the call
                raise StoreClosedError(f"{self.name}: {operation} failed: the store was closed while it ran "
                                       f"({self.path}): {type(exc).__name__}: {exc}") from exc
            raise self._translate(exc, operation) from exc

    # ------------------------------------------------------------------ MemoryStore

    def store(self, item: MemoryItem) -> str:
        if not isinstance(item, MemoryItem):
            raise InvalidMemoryItemError(f"{self.name}: store() takes a MemoryItem, got {type(item).__name__}")
        self._write([Put(item)])
        return item.id

    def retrieve(self, item_id: str) -> MemoryItem | None:
        check_id(item_id)
        tx = self._bound_transaction()
        if tx is not None:
            buffered = tx.writes.lookup(item_id)
            if buffered is not ABSENT:
                return buffered  # type: ignore[return-value]
        return self._call("retrieve", self._get, item_id)

    def search(self, query: Any = None) -> list[MemoryItem]:
        parsed = MemoryQuery.parse(query)
        tx = self._bound_transaction()
        if tx is not None and tx.writes:
            unlimited = _without_limit(parsed)
            return tx.writes.overlay_search(self._call("search", self._search, unlimited), parsed)
        return self._call("search", self._search, parsed)

    def delete(self, item_id: str) -> bool:
        check_id(item_id)
        tx = self._bound_transaction()
        if tx is not None:
            existed = self.retrieve(item_id) is not None
            tx.writes.add(Delete(item_id))
            return existed

        if self._coordinator is not None:  # a managed store: the delete is a transaction of its own
            existed = self.retrieve(item_id) is not None
            self._write([Delete(item_id)])
            return existed

        def delete_if_present() -> bool:
            if self._get(item_id) is None:
                return False
            self._apply_locked([Delete(item_id)], durable=True)
            return True

        return self._call("delete", delete_if_present)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                self._close()
            except Exception as exc:
                raise self._translate(exc, "close") from exc
            finally:
                self._release_path_lock()

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> BaseMemoryStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(path={self.path!r}, name={self.name!r})"

    # ------------------------------------------------------------------ batches and scans

    def store_many(self, items: Sequence[MemoryItem]) -> list[str]:
        items = list(items)
        for item in items:
            if not isinstance(item, MemoryItem):
                raise InvalidMemoryItemError(f"{self.name}: store_many() takes MemoryItems, got {type(item).__name__}")
        self._write([Put(item) for item in items])
        return [item.id for item in items]

    def retrieve_many(self, item_ids: Sequence[str]) -> dict[str, MemoryItem]:
        ids = [check_id(i) for i in item_ids]
        found = self._call("retrieve_many", self._get_many, ids)
        tx = self._bound_transaction()
        if tx is not None:
            for item_id in ids:
                buffered = tx.writes.lookup(item_id)
                if buffered is None:
                    found.pop(item_id, None)
                elif buffered is not ABSENT:
                    found[item_id] = buffered  # type: ignore[assignment]
        return found

    def delete_many(self, item_ids: Sequence[str]) -> int:
        ids = list(dict.fromkeys(check_id(i) for i in item_ids))
        present = self.retrieve_many(ids)
        self._write([Delete(i) for i in ids])
        return len(present)

    def iter_items(self) -> Iterator[MemoryItem]:
        """Every stored item (committed state), in no particular order."""
        return iter(self._call("scan", lambda: list(self._scan())))

    def count(self) -> int:
        return self._call("count", self._count)

    # ------------------------------------------------------------------ participant (2PC)

    def prepare_ops(self, ops: Sequence[Operation]) -> list[Operation]:
        """Validate and complete ``ops`` without changing the store; raise a typed error if any is bad."""
        if self._closed:
            raise StoreClosedError(f"{self.name}: prepare on a closed store ({self.path})")
        prepared = []
        for op in ops:
            if isinstance(op, Put):
                # A MemoryItem is an immutable value validated when it was built: nothing to check again.
                if not isinstance(op.item, MemoryItem):
                    raise InvalidMemoryItemError(f"{self.name}: Put needs a MemoryItem, got {type(op.item).__name__}")
            elif isinstance(op, (Relate, Unrelate)):
                if Capability.GRAPH not in self.capabilities:
                    raise UnsupportedCapabilityError(f"{self.name} does not store relationships")
            elif not isinstance(op, Delete):
                raise InvalidInputError(f"{self.name}: not an operation: {op!r}")
            prepared.append(op)
        return self._call("prepare", self._prepare_all, prepared)

    def _prepare_all(self, ops: list[Operation]) -> list[Operation]:
        return [self._prepare_op(op) for op in ops]

    def apply_prepared(self, ops: Sequence[Operation], *, durable: bool = True) -> None:
        """Apply prepared operations; idempotent, and atomic where the engine allows."""
        self._call("apply", self._apply_locked, list(ops), durable)

    def flush(self) -> None:
        self._call("flush", self._flush)

    def _apply_locked(self, ops: list[Operation], durable: bool) -> None:
        self._run_pending_compensations()
        if not ops or self._apply_is_atomic(ops):
            self._apply(ops, durable)
            return
        undo = self._before_images(ops)
        try:
            self._apply(ops, durable)
        except BaseException:
            self._compensate(undo)
            raise

    def _apply_is_atomic(self, ops: Sequence[Operation]) -> bool:
        return self.atomic_apply

    def _before_images(self, ops: Sequence[Operation]) -> list[Operation]:
        """Operations that put every id ``ops`` touches back as it is now."""
        undo: list[Operation] = []
        seen: set[str] = set()
        for op in ops:
            if isinstance(op, (Put, Delete)) and op.item_id not in seen:
                seen.add(op.item_id)
                before = self._current_state(op.item_id)
                undo.append(Delete(op.item_id) if before is None else before)
        return undo

    def _compensate(self, undo: list[Operation]) -> None:
        try:
            self._apply(undo, True)
        except Exception:
            # Could not undo now: keep the compensating action and run it before the next write.
            self._log.exception("%s: compensation failed; queued for the next write", self.name)
            self._pending_compensations.append(undo)

    def _run_pending_compensations(self) -> None:
        while self._pending_compensations:
            self._apply(self._pending_compensations[0], True)
            self._pending_compensations.pop(0)

    def _write(self, ops: list[Operation]) -> None:
        """A write from the public API: buffered inside a transaction, else prepared and applied."""
        tx = self._bound_transaction()
        if tx is not None:
            for op in ops:
                tx.writes.add(op)
            return
        if self._coordinator is not None:
            self._coordinator.write_outside_transaction(self, ops)
            return
        prepared = self.prepare_ops(ops)
        self.apply_prepared(prepared)

    # ------------------------------------------------------------------ the guide's transactions

    def _bound_transaction(self) -> _LocalTransaction | None:
        return getattr(self._local, "transaction", None)

    def begin_transaction(self, transaction_id: str | None = None) -> str:
        """Start buffering this thread's writes to this store until commit or rollback."""
        if self._bound_transaction() is not None:
            raise TransactionStateError(
                f"{self.name}: a transaction is already open on this thread; nested transactions are not supported",
                transaction_id=transaction_id, store=self.name)
        transaction_id = transaction_id or uuid.uuid4().hex
        if transaction_id in self._transactions:
            raise TransactionStateError(f"{self.name}: transaction {transaction_id} already exists",
                                        transaction_id=transaction_id, store=self.name)
        tx = _LocalTransaction(transaction_id)
        self._transactions[transaction_id] = tx
        self._local.transaction = tx
        return transaction_id

    def _transaction(self, transaction_id: str) -> _LocalTransaction:
        tx = self._transactions.get(transaction_id)
        if tx is None:
            raise TransactionStateError(f"{self.name}: no open transaction {transaction_id!r}",
                                        transaction_id=transaction_id, store=self.name)
        return tx

    def prepare_commit(self, transaction_id: str) -> None:
        """Phase one: validate the buffered writes; after this, commit fails only if the engine does."""
        tx = self._transaction(transaction_id)
        tx.prepared = self.prepare_ops(tx.writes.ops)

    def commit(self, transaction_id: str) -> None:
        """Phase two: apply the buffered writes (prepared first if need be), all or none."""
        tx = self._transaction(transaction_id)
        if tx.prepared is None:
            tx.prepared = self.prepare_ops(tx.writes.ops)
        self.apply_prepared(tx.prepared)
        self._end(tx)

    def rollback(self, transaction_id: str) -> None:
        """Discard the buffered writes; the store never saw them."""
        self._end(self._transaction(transaction_id))

    def transaction_ops(self, transaction_id: str) -> list[Operation]:
        """The writes buffered so far by an open transaction, in order."""
        return list(self._transaction(transaction_id).writes.ops)

    def _end(self, tx: _LocalTransaction) -> None:
        self._transactions.pop(tx.id, None)
        if getattr(self._local, "transaction", None) is tx:
            self._local.transaction = None

    # ------------------------------------------------------------------ snapshot / restore (a tool)

    def snapshot(self) -> list[Operation]:
        """Operations that recreate the whole store: a copy, for tools and tests."""
        return self._call("snapshot", self._snapshot)

    def _snapshot(self) -> list[Operation]:
        return [self._current_state(item.id) or Put(item) for item in self._scan()]

    def restore(self, snapshot: Sequence[Operation]) -> None:
        """Make the store hold exactly what ``snapshot`` recreates."""
        snapshot = list(snapshot)
        self.prepare_ops(snapshot)  # reject a bad snapshot before deleting anything
        current = [item.id for item in self.iter_items()]
        self._write([Delete(i) for i in current] + snapshot)


def _without_limit(query: MemoryQuery) -> MemoryQuery:
    import dataclasses

    return query if query.limit is None else dataclasses.replace(query, limit=None)


def import_backend(module: str, extra: str) -> Any:
    """Import a backend library, or raise MissingBackend naming the extra that installs it."""
    import importlib

    from memsys.domain.errors import MissingBackend

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingBackend(module, extra) from exc
