"""Fault injection by patching a store's own methods (the older API; see port_faults for wrappers).

    faults = FaultInjector(store, seed=7)
    faults.fail("apply", probability=0.3)             # transient StoreUnavailableError, 30% of applies
    faults.fail("apply", error=StoreError, times=2)   # the next two applies fail for good
    faults.delay("retrieve", seconds=0.05)
    ...
    faults.heal()                                     # back to normal; the counts stay

The injector replaces the named methods on the store object itself, so the
store's own internal calls see the faults too (``memsys.testing.port_faults``
wraps a store instead and faults only calls made through the wrapper). The
decisions come from a ``FaultPlan`` with the same seed, so a run repeats exactly
and every injected error names its seed and event. Only methods the store has
are patched: a protocol-only third-party store without ``apply_prepared`` can
still have its reads faulted, and asking to fault a method it lacks is a typed
error, not an AttributeError.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

from memsys.domain.errors import InvalidInputError, MemsysError, StoreUnavailableError, UnsupportedCapabilityError
from memsys.testing.port_faults import FaultEvent, FaultPlan

OPERATIONS = ("apply", "prepare", "retrieve", "search", "flush")
_METHODS = {"apply": "apply_prepared", "prepare": "prepare_ops", "retrieve": "retrieve", "search": "search",
            "flush": "flush"}
_OPERATION_OF = {method: operation for operation, method in _METHODS.items()}


class FaultInjector:
    def __init__(self, store: Any, seed: int = 0) -> None:
        self.store = store
        self.plan = FaultPlan(seed=seed)
        self.injected: Counter[str] = Counter()
        self.plan.listeners.append(self._count)
        self._originals: dict[str, Callable[..., Any]] = {}
        self._own: dict[str, bool] = {}  # whether the object itself held the method (not its class)
        for method in _METHODS.values():
            original = getattr(store, method, None)
            if not callable(original):
                continue  # a store without this port method: nothing to fault there
            self._own[method] = method in getattr(store, "__dict__", {})
            try:
                setattr(store, method, self._wrap(method, original))
            except AttributeError as exc:  # __slots__ or a read-only attribute
                self.remove()
                raise UnsupportedCapabilityError(
                    f"cannot patch {type(store).__name__}.{method} ({exc}); wrap the store with "
                    "memsys.testing.port_faults.wrap_store instead") from exc
            self._originals[method] = original

    def _wrap(self, method: str, original: Callable[..., Any]) -> Callable[..., Any]:
        def faulty(*args: Any, **kwargs: Any) -> Any:
            name = getattr(self.store, "name", None) or type(self.store).__name__
            return self.plan.call(str(name), method, original, args, kwargs)

        return faulty

    def _count(self, event: FaultEvent) -> None:
        operation = _OPERATION_OF.get(event.method, event.method)
        self.injected[f"{operation}:{'delay' if event.kind == 'latency' else event.error}"] += 1

    def _method(self, operation: str) -> str:
        if operation not in OPERATIONS:
            raise InvalidInputError(f"unknown operation {operation!r}; use one of {OPERATIONS}")
        method = _METHODS[operation]
        if method not in self._originals:
            raise UnsupportedCapabilityError(
                f"{type(self.store).__name__} has no {method}(); it cannot have {operation!r} faults")
        return method

    def fail(self, operation: str, *, error: type[MemsysError] = StoreUnavailableError, probability: float = 1.0,
             times: int | None = None) -> FaultInjector:
        method = self._method(operation)
        if not (isinstance(error, type) and issubclass(error, MemsysError)):
            raise InvalidInputError(f"error must be a memsys error class, got {error!r}")
        self.plan.add(method=method, kind="transient" if error.transient else "permanent", probability=probability,
                      times=times, error=error)
        return self

    def delay(self, operation: str, seconds: float, *, probability: float = 1.0,
              times: int | None = None) -> FaultInjector:
        self.plan.add(method=self._method(operation), kind="latency", seconds=seconds, probability=probability,
                      times=times)
        return self

    def heal(self) -> None:
        self.plan.heal()

    def remove(self) -> None:
        """Put the store's own methods back."""
        self.heal()
        for method, original in self._originals.items():
            if self._own.get(method):
                setattr(self.store, method, original)
            else:
                delattr(self.store, method)  # the class's method shows through again
        self._originals.clear()

    @property
    def total(self) -> int:
        return sum(self.injected.values())
