"""MemoryManager: one entry point over named stores, with atomic cross-store writes.

    manager = MemoryManager({"lmdb": LMDBMemoryAdapter(path=...), "duckdb": DuckDBMemoryAdapter(path=...)},
                            transaction_log="memory/txlog")
    with manager.with_transaction(["lmdb", "duckdb"]):
        manager.adapters["lmdb"].store(item_a)
        manager.adapters["duckdb"].store(item_b)

Every store a manager owns is managed: a write outside a transaction is a
transaction of its own (logged, version-stamped), so it can never slip between
another transaction's read and write unseen. Opening a manager on the same
stores and log after a crash runs recovery before anything else.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

from memsys.adapters._base import BaseMemoryStore
from memsys.adapters.foreign_store import as_participant
from memsys.application.oplog import OperationLog
from memsys.application.transactions import Coordinator, RecoveryReport, TransactionContext
from memsys.application.txlog import CoordinatorLog, MemoryLog
from memsys.domain.errors import InvalidInputError, TransactionStateError
from memsys.domain.model import MemoryItem, check_id
from memsys.domain.operations import Delete, Put

log = logging.getLogger("memsys.manager")


class MemoryManager:
    def __init__(self, adapters: Mapping[str, Any] | None = None, *,
                 transaction_log: str | os.PathLike[str] | None = None,
                 operation_log: str | os.PathLike[str] | None = None,
                 store_priorities: Sequence[str] | None = None, compact_records: int = 20_000) -> None:
        self.adapters: dict[str, BaseMemoryStore] = {}
        for name, adapter in (adapters or {}).items():
            if not isinstance(name, str) or not name:
                raise InvalidInputError(f"store names must be non-empty strings, got {name!r}")
            participant = as_participant(name, adapter)
            if participant._coordinator is not None:
                raise TransactionStateError(f"store {name!r} already belongs to another MemoryManager", store=name)
            self.adapters[name] = participant
        self.store_priorities = list(store_priorities or self.adapters)
        unknown = [s for s in self.store_priorities if s not in self.adapters]
        if unknown:
            raise InvalidInputError(f"store_priorities names unknown stores {unknown}")
        if transaction_log is None:
            log.warning("MemoryManager without transaction_log: transactions are atomic while the process "
                        "lives, but a crash mid-commit cannot be recovered")
        self.coordinator = Coordinator(
            self.adapters, CoordinatorLog(transaction_log) if transaction_log is not None else MemoryLog(),
            operation_log=OperationLog(operation_log) if operation_log is not None else None,
            compact_records=compact_records)
        for name, adapter in self.adapters.items():
            adapter.name = name
            adapter._coordinator = self.coordinator
        #: What recovery did when this manager opened.
        self.last_recovery: RecoveryReport = self.coordinator.recover()

    # --- transactions

    def with_transaction(self, stores: Sequence[str] | None = None) -> TransactionContext:
        """A transaction over ``stores`` (default: all). Use it as a context manager."""
        return TransactionContext(self.coordinator, list(stores) if stores is not None else list(self.adapters))

    def recover(self) -> RecoveryReport:
        """Redo what the log has decided and the stores may lack; report what was done."""
        self.last_recovery = self.coordinator.recover()
        return self.last_recovery

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
        """Checkpoint the log (so the next open has nothing to redo) and close every store."""
        try:
            self.coordinator.close()
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


__all__ = ["MemoryManager", "Put", "Delete"]
