"""Fault injection for any store built on memsys' adapter base (and so for third-party ones).

    faults = FaultInjector(store, seed=7)
    faults.fail("apply", probability=0.3)             # transient StoreUnavailableError, 30% of applies
    faults.fail("apply", error=StoreError, times=2)   # the next two applies fail for good
    faults.delay("retrieve", seconds=0.05)
    ...
    faults.heal()                                     # back to normal; the counts stay

Faults are injected at the store's public participant and read methods, as a
failing disk, network or driver would surface them: always as memsys errors,
never leaving a half-applied batch behind (a real partial apply is what the
crash experiments produce). Decisions come from a seeded generator, so a run
repeats exactly.
"""

from __future__ import annotations

import dataclasses
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from memsys.domain.errors import InvalidInputError, MemsysError, StoreUnavailableError

OPERATIONS = ("apply", "prepare", "retrieve", "search", "flush")
_METHODS = {"apply": "apply_prepared", "prepare": "prepare_ops", "retrieve": "retrieve", "search": "search",
            "flush": "flush"}


@dataclasses.dataclass
class _Rule:
    error: type[MemsysError] | None
    probability: float
    times: int | None
    seconds: float = 0.0


class FaultInjector:
    def __init__(self, store: Any, seed: int = 0) -> None:
        self.store = store
        self.rng = random.Random(seed)
        self.injected: Counter[str] = Counter()
        self._rules: dict[str, list[_Rule]] = {}
        self._lock = threading.Lock()
        self._originals: dict[str, Callable[..., Any]] = {}
        for operation, method in _METHODS.items():
            original = getattr(store, method)
            self._originals[method] = original
            setattr(store, method, self._wrap(operation, original))

    def _wrap(self, operation: str, original: Callable[..., Any]) -> Callable[..., Any]:
        def faulty(*args: Any, **kwargs: Any) -> Any:
            self._maybe_fail(operation)
            return original(*args, **kwargs)

        return faulty

    def _maybe_fail(self, operation: str) -> None:
        with self._lock:
            rules = self._rules.get(operation, [])
            chosen = None
            for rule in rules:
                if rule.times is not None and rule.times <= 0:
                    continue
                if self.rng.random() < rule.probability:
                    chosen = rule
                    if rule.times is not None:
                        rule.times -= 1
                    break
        if chosen is None:
            return
        if chosen.seconds:
            self.injected[f"{operation}:delay"] += 1
            time.sleep(chosen.seconds)
        if chosen.error is not None:
            self.injected[f"{operation}:{chosen.error.__name__}"] += 1
            name = getattr(self.store, "name", type(self.store).__name__)
            raise chosen.error(f"injected fault: {operation} on {name}")

    def fail(self, operation: str, *, error: type[MemsysError] = StoreUnavailableError, probability: float = 1.0,
             times: int | None = None) -> FaultInjector:
        self._check(operation)
        with self._lock:
            self._rules.setdefault(operation, []).append(_Rule(error, probability, times))
        return self

    def delay(self, operation: str, seconds: float, *, probability: float = 1.0,
              times: int | None = None) -> FaultInjector:
        self._check(operation)
        with self._lock:
            self._rules.setdefault(operation, []).append(_Rule(None, probability, times, seconds))
        return self

    def heal(self) -> None:
        with self._lock:
            self._rules.clear()

    def remove(self) -> None:
        """Put the store's own methods back."""
        self.heal()
        for method, original in self._originals.items():
            setattr(self.store, method, original)

    @property
    def total(self) -> int:
        return sum(self.injected.values())

    @staticmethod
    def _check(operation: str) -> None:
        if operation not in OPERATIONS:
            raise InvalidInputError(f"unknown operation {operation!r}; use one of {OPERATIONS}")
