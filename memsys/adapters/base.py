"""Everything an adapter author needs, from one public module.

    from memsys.adapters.base import BaseMemoryStore, Capability, MemoryItem, Put, Delete, Journal

An adapter either implements the MemoryStore protocol directly (``store``,
``retrieve``, ``search``, ``delete``, ``close``; MemoryManager then wraps it
for transactions), or subclasses ``BaseMemoryStore`` and implements a few
primitives on its engine (``_get``, ``_scan``, ``_apply``, ``_close``), which
gives it validation, error translation, batches, the guide's per-store
transactions and two-phase-commit participation for free. docs/adapters.md
walks through both; examples/jsonfile_store.py is a complete adapter built on
this module only.

What is here:

* the protocol and capabilities: ``MemoryStore`` (and the batch, vector, graph
  and transaction protocols), ``Capability``, ``has_capability``;
* the base class ``BaseMemoryStore`` and ``import_backend`` (a missing library
  becomes ``MissingBackend`` naming the extra);
* values: ``MemoryItem``, ``MemoryType``, ``MemoryVector``, ``Relationship``,
  ``decode_item`` (a stored dict back to an item);
* validators: ``check_id`` (an item id), ``check_json`` (a JSON value such as
  metadata), ``validate_item`` (anything a caller passed to ``store``);
* queries: ``MemoryQuery`` and ``evaluate_query(query, items)``, the reference
  semantics every ``search`` must match (dict, string or MemoryQuery);
* operations for ``_apply``: ``Put``, ``Delete``, ``Relate``, ``Unrelate``,
  ``encode_op`` / ``decode_op`` (JSON-safe records for a journal);
* durable files: ``Journal`` (checksummed snapshot + append-only log),
  ``atomic_write``, ``fsync_dir``, ``PathLock``, ``os_error`` (an OSError to
  DiskFullError / ReadOnlyStoreError / StoreError);
* the errors to raise, each with what it means (see ``ERRORS``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from memsys.adapters._base import BaseMemoryStore, import_backend
from memsys.domain.errors import (
    CorruptStoreError,
    DeadlineExceededError,
    DiskFullError,
    InvalidInputError,
    InvalidMemoryItemError,
    InvalidQueryError,
    MemsysError,
    MissingBackend,
    NotFoundError,
    PermanentError,
    ReadOnlyStoreError,
    StoreClosedError,
    StoreError,
    StoreLockedError,
    StoreUnavailableError,
    TransactionStateError,
    TransientError,
    UnknownMemoryTypeError,
    UnsupportedCapabilityError,
    VectorDimensionError,
)
from memsys.domain.model import (
    MemoryItem,
    MemoryType,
    MemoryVector,
    Relationship,
    check_id,
    check_json,
    decode_item,
)
from memsys.domain.operations import Delete, Operation, Put, Relate, Unrelate, decode_op, encode_op
from memsys.domain.query import MemoryQuery
from memsys.durable import Journal, PathLock, atomic_write, fsync_dir, os_error
from memsys.ports import (
    BatchStore,
    Capability,
    GraphStore,
    MemoryStore,
    TransactionalStore,
    VectorStore,
    has_capability,
)

#: Which error to raise for what. Every error a store raises must be one of these (or a subclass):
#: callers retry TransientError, never PermanentError, and the verifier fails anything else.
ERRORS: dict[str, str] = {
    "InvalidMemoryItemError": "store() got something that is not a valid MemoryItem",
    "InvalidInputError": "a bad argument (an id that is not a non-empty str, a bad option); nothing changes",
    "InvalidQueryError": "search() got a query it cannot parse (MemoryQuery.parse raises it for you)",
    "StoreClosedError": "any call after close()",
    "CorruptStoreError": "the files hold something unreadable (name the file and offset); never overwrite it",
    "StoreLockedError": "another opener holds the path (PathLock raises it naming the holder)",
    "DiskFullError": "ENOSPC / EDQUOT while writing (os_error maps it); the write is not applied",
    "ReadOnlyStoreError": "EROFS / EACCES while writing (os_error maps it)",
    "StoreUnavailableError": "the engine or server is unreachable for now: callers may retry",
    "DeadlineExceededError": "a call ran out of time: callers may retry",
    "StoreError": "any other engine failure; translate it in _translate and chain it (raise ... from exc)",
    "UnsupportedCapabilityError": "a call needs a capability the store does not declare",
    "VectorDimensionError": "an embedding of the wrong length (vector stores)",
    "TransactionStateError": "commit/rollback of an unknown transaction, or a nested begin on one thread",
    "MissingBackend": "the engine's library is not installed (import_backend raises it naming the extra)",
}


def validate_item(item: Any, where: str = "store()") -> MemoryItem:
    """Return ``item`` if it is a MemoryItem (every MemoryItem was fully validated when it was built:
    ids, JSON content and metadata, types, timestamps); InvalidMemoryItemError otherwise."""
    if not isinstance(item, MemoryItem):
        raise InvalidMemoryItemError(f"{where} takes a MemoryItem, got {type(item).__name__}")
    return item


def evaluate_query(query: Any, items: Iterable[MemoryItem]) -> list[MemoryItem]:
    """The reference search: parse ``query`` (None, a dict, a plain string or a MemoryQuery; a bad
    one raises InvalidQueryError) and select from ``items`` exactly as every store must: filters,
    order (created_at, then id) and limit. An adapter without its own query engine returns this."""
    return MemoryQuery.parse(query).select(items)


__all__ = [
    "BaseMemoryStore", "import_backend",
    "MemoryStore", "BatchStore", "TransactionalStore", "VectorStore", "GraphStore", "Capability", "has_capability",
    "MemoryItem", "MemoryType", "MemoryVector", "Relationship", "decode_item",
    "check_id", "check_json", "validate_item", "MemoryQuery", "evaluate_query",
    "Operation", "Put", "Delete", "Relate", "Unrelate", "encode_op", "decode_op",
    "Journal", "atomic_write", "fsync_dir", "PathLock", "os_error",
    "ERRORS", "MemsysError", "TransientError", "PermanentError", "StoreUnavailableError", "DeadlineExceededError",
    "DiskFullError", "StoreLockedError", "InvalidInputError", "InvalidMemoryItemError", "InvalidQueryError",
    "UnknownMemoryTypeError", "VectorDimensionError", "NotFoundError", "UnsupportedCapabilityError",
    "MissingBackend", "CorruptStoreError", "ReadOnlyStoreError", "StoreClosedError", "StoreError",
    "TransactionStateError",
]
