"""memsys: one memory model over seven real stores, with cross-store
transactions that survive crashes, and the harness that proves it.

    from memsys import MemoryItem, MemoryType, MemoryManager
    from memsys.adapters import LMDBMemoryAdapter, DuckDBMemoryAdapter

Importing memsys imports no backend library: each adapter imports its
library when it is constructed.
"""

from __future__ import annotations

from memsys._lazy import lazy_exports

from typing import TYPE_CHECKING

from memsys.domain.errors import (
    CircuitBreakerOpenError,
    CommitIncompleteError,
    ConflictError,
    CorruptStoreError,
    DeadlineExceededError,
    DiskFullError,
    InvalidInputError,
    InvalidMemoryItemError,
    InvalidQueryError,
    MemoryRetrievalError,
    MemoryStorageError,
    MemsysError,
    MissingBackend,
    NotFoundError,
    PermanentError,
    ReadOnlyStoreError,
    StoreClosedError,
    StoreError,
    StoreLockedError,
    StoreUnavailableError,
    TransactionAbortedError,
    TransactionError,
    TransactionStateError,
    TransientError,
    UnknownMemoryTypeError,
    UnsupportedCapabilityError,
    VectorDimensionError,
)
from memsys.domain.model import MemoryItem, MemoryType, MemoryVector, Relationship, SerializedMemoryItem
from memsys.domain.query import MemoryQuery
from memsys.ports import Capability

__version__ = "0.1.0"

# Application and resilience names load on first use, keeping `import memsys` light.
_LAZY = {
    "MemoryManager": "memsys.application.manager",
    "TransactionContext": "memsys.application.transactions",
    "SyncManager": "memsys.application.sync",
    "QueryRouter": "memsys.application.query_router",
    "CircuitBreaker": "memsys.resilience.circuit_breaker",
    "retry_with_backoff": "memsys.resilience.retry",
}

if TYPE_CHECKING:  # pragma: no cover
    from memsys.application.manager import MemoryManager
    from memsys.application.query_router import QueryRouter
    from memsys.application.sync import SyncManager
    from memsys.application.transactions import TransactionContext
    from memsys.resilience.circuit_breaker import CircuitBreaker
    from memsys.resilience.retry import retry_with_backoff


__getattr__ = lazy_exports(__name__, _LAZY)


__all__ = [
    "Capability", "CircuitBreaker", "CircuitBreakerOpenError", "CommitIncompleteError", "ConflictError",
    "CorruptStoreError", "DeadlineExceededError", "DiskFullError", "InvalidInputError", "InvalidMemoryItemError",
    "InvalidQueryError", "MemoryItem", "MemoryManager", "MemoryQuery", "MemoryRetrievalError",
    "MemoryStorageError", "MemoryType", "MemoryVector", "MemsysError", "MissingBackend", "NotFoundError",
    "PermanentError", "QueryRouter", "ReadOnlyStoreError", "Relationship", "SerializedMemoryItem", "StoreClosedError", "StoreError",
    "StoreLockedError", "StoreUnavailableError", "SyncManager", "TransactionAbortedError", "TransactionContext",
    "TransactionError", "TransactionStateError", "TransientError", "UnknownMemoryTypeError",
    "UnsupportedCapabilityError", "VectorDimensionError", "__version__", "retry_with_backoff",
]
