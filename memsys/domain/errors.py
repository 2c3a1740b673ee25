"""Every error memsys raises, in one tree.

Callers decide what to do by the branch an error sits on: a ``TransientError``
may succeed if the same call is retried later; a ``PermanentError`` will fail
again until something changes (the input, the installation, the file on disk).
``TransactionError`` covers the outcomes of a cross-store transaction, and the
two aggregate errors from the Memory Integration Guide report a read or write
that failed on every store it was tried on.

    MemsysError
    ├── TransientError                  retry may help
    │   ├── StoreUnavailableError       a store did not answer, timed out or is busy
    │   │   ├── DeadlineExceededError   a call ran past its deadline
    │   │   ├── DiskFullError           no space left (ENOSPC, EDQUOT, EFBIG); nothing was written
    │   │   └── StoreLockedError        another process or object holds the store's path
    │   └── CircuitBreakerOpenError     the store's breaker rejects calls for now
    ├── PermanentError                  retrying the same call fails the same way
    │   ├── InvalidInputError           (also a ValueError)
    │   │   ├── InvalidMemoryItemError
    │   │   │   └── UnknownMemoryTypeError
    │   │   ├── InvalidQueryError
    │   │   └── VectorDimensionError
    │   ├── NotFoundError               (also a KeyError)
    │   ├── UnsupportedCapabilityError
    │   ├── MissingBackend              (also an ImportError) names the extra to install
    │   ├── CorruptStoreError           a file on disk cannot be read; never overwritten
    │   ├── ReadOnlyStoreError          the store's file system refuses writes (EROFS, EACCES)
    │   ├── StoreClosedError
    │   └── StoreError                  any other backend failure, driver error chained
    ├── TransactionError
    │   ├── TransactionStateError       misuse: nested, reused, store not enlisted
    │   ├── ConflictError               a concurrent transaction wrote the same id first
    │   ├── TransactionAbortedError     prepare failed on a named store; nothing applied
    │   └── CommitIncompleteError       committed and durable; recovery finishes a store
    ├── MemoryStorageError              a write failed on every store tried
    └── MemoryRetrievalError            a read failed on every store tried

Every adapter translates its driver's exceptions in one place, chaining the
original (``raise StoreError(...) from exc``), so no driver exception escapes.
"""

from __future__ import annotations

from collections.abc import Mapping


class MemsysError(Exception):
    """Base of every error memsys raises."""

    #: Whether retrying the same call later may succeed.
    transient: bool = False


# --- transient ---------------------------------------------------------------


class TransientError(MemsysError):
    """A retry of the same call may succeed."""

    transient = True


class StoreUnavailableError(TransientError):
    """A store did not answer, timed out, or is temporarily busy."""

    def __init__(self, message: str, *, store: str | None = None) -> None:
        super().__init__(message)
        self.store = store


class DeadlineExceededError(StoreUnavailableError):
    """A call to a store ran past its deadline."""


class DiskFullError(StoreUnavailableError):
    """The file system holding a store or log is full; the write was not made (nothing of it
    will ever be applied). Retry after space is freed."""

    def __init__(self, message: str, *, store: str | None = None, path: str | None = None) -> None:
        super().__init__(message, store=store)
        self.path = path


class StoreLockedError(StoreUnavailableError):
    """Another process, or another object in this process, has the store's path open.

    ``holder`` describes it (pid and what opened it) where the lock file says.
    """

    def __init__(self, message: str, *, store: str | None = None, path: str | None = None,
                 holder: str | None = None) -> None:
        super().__init__(message, store=store)
        self.path = path
        self.holder = holder


class CircuitBreakerOpenError(TransientError):
    """The circuit breaker of a store is open and rejects calls until it resets."""

    def __init__(self, message: str, *, store: str | None = None, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.store = store
        self.retry_after = retry_after


# --- permanent ---------------------------------------------------------------


class PermanentError(MemsysError):
    """Retrying the same call will fail the same way."""


class InvalidInputError(PermanentError, ValueError):
    """The caller passed something memsys cannot accept; no store was changed."""


class InvalidMemoryItemError(InvalidInputError):
    """A MemoryItem (or a record meant to become one) is malformed."""


class UnknownMemoryTypeError(InvalidMemoryItemError):
    """A memory type is neither a MemoryType, nor one's value, nor one's name."""


class InvalidQueryError(InvalidInputError):
    """A search query has an unknown key or a value of the wrong kind."""


class VectorDimensionError(InvalidInputError):
    """A vector's length differs from the dimension of the store."""

    def __init__(self, message: str, *, expected: int | None = None, got: int | None = None) -> None:
        super().__init__(message)
        self.expected = expected
        self.got = got


class NotFoundError(PermanentError, KeyError):
    """A required item or relationship does not exist."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class UnsupportedCapabilityError(PermanentError):
    """The store does not declare the capability this call needs."""


class MissingBackend(PermanentError, ImportError):
    """A backend library is not installed; the message names the extra to install."""

    def __init__(self, library: str, extra: str) -> None:
        super().__init__(
            f"the {library!r} library is not installed; install it with "
            f"`pip install 'memsys[{extra}]'`"
        )
        self.library = library
        self.extra = extra


class CorruptStoreError(PermanentError):
    """A store's file cannot be read; memsys never overwrites it."""

    def __init__(self, message: str, *, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path


class ReadOnlyStoreError(PermanentError):
    """The file system under a store refuses writes (read-only mount, no permission)."""

    def __init__(self, message: str, *, store: str | None = None, path: str | None = None) -> None:
        super().__init__(message)
        self.store = store
        self.path = path


class StoreClosedError(PermanentError):
    """The store was closed; open a new adapter on the same path."""


class StoreError(PermanentError):
    """A backend failed in a way that is not known to be transient."""

    def __init__(self, message: str, *, store: str | None = None) -> None:
        super().__init__(message)
        self.store = store


# --- transactions ------------------------------------------------------------


class TransactionError(MemsysError):
    """Base of the outcomes of cross-store transactions."""

    def __init__(self, message: str, *, transaction_id: str | None = None, store: str | None = None) -> None:
        super().__init__(message)
        self.transaction_id = transaction_id
        self.store = store


class TransactionStateError(TransactionError):
    """A transaction was used wrongly (nested, reused, store not enlisted)."""


class ConflictError(TransactionError):
    """A concurrent transaction committed a write to the same id first.

    Nothing of this transaction was applied; re-run it to build on the new state.
    """

    def __init__(self, message: str, *, transaction_id: str | None = None, store: str | None = None,
                 item_id: str | None = None) -> None:
        super().__init__(message, transaction_id=transaction_id, store=store)
        self.item_id = item_id


class TransactionAbortedError(TransactionError):
    """A participant failed to prepare; every participant was rolled back."""


class CommitIncompleteError(TransactionError):
    """The transaction is committed and durable, but a store has not applied it yet.

    The coordinator log holds the decision; recovery (``MemoryManager.recover``,
    or the next manager opened on the same log) completes the store. Treat the
    transaction as committed.
    """

    committed = True


# --- aggregate errors from the Memory Integration Guide ----------------------


class _AggregateError(MemsysError):
    def __init__(self, message: str, errors: Mapping[str, BaseException] | None = None) -> None:
        super().__init__(message)
        self.errors: dict[str, BaseException] = dict(errors or {})
        self.transient = bool(self.errors) and all(
            getattr(e, "transient", False) for e in self.errors.values()
        )


class MemoryStorageError(_AggregateError):
    """A write failed on every store it was tried on; ``errors`` maps store to cause."""


class MemoryRetrievalError(_AggregateError):
    """A read failed on every store it was tried on; ``errors`` maps store to cause."""


__all__ = [
    "CircuitBreakerOpenError", "CommitIncompleteError", "ConflictError", "CorruptStoreError",
    "DeadlineExceededError", "DiskFullError", "InvalidInputError", "InvalidMemoryItemError", "InvalidQueryError",
    "MemoryRetrievalError", "MemoryStorageError", "MemsysError", "MissingBackend", "NotFoundError",
    "PermanentError", "ReadOnlyStoreError", "StoreClosedError", "StoreLockedError", "StoreError", "StoreUnavailableError",
    "TransactionAbortedError", "TransactionError", "TransactionStateError", "TransientError",
    "UnknownMemoryTypeError", "UnsupportedCapabilityError", "VectorDimensionError",
]
