"""A circuit breaker per store: stop calling a store that keeps failing, probe it later.

CLOSED: calls pass; ``failure_threshold`` consecutive failures open the circuit.
OPEN: calls fail at once with CircuitBreakerOpenError until ``reset_timeout``
seconds have passed on a monotonic clock. HALF_OPEN: exactly one probe call is
let through; its success closes the circuit, its failure opens it again.
Thread-safe. Only failures of the store trip it: a caller's bad input, a
missing item or a transaction conflict says nothing about the store's health.

A MemoryManager keeps one per store and puts it on every path that reaches the
store (prepare, apply, recovery, reads; see ``memsys.observability.calls``);
``MemoryManager(breakers={"kuzu": {"failure_threshold": 5, "reset_timeout": 10}})``
configures them per store.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from enum import Enum
from functools import wraps
from typing import Any, TypeVar

from memsys.domain.errors import (
    CircuitBreakerOpenError,
    InvalidInputError,
    NotFoundError,
    TransactionError,
    UnsupportedCapabilityError,
)

T = TypeVar("T")

#: Errors that are the caller's, not the store's.
NOT_STORE_FAILURES: tuple[type[BaseException], ...] = (InvalidInputError, NotFoundError, TransactionError,
                                                      UnsupportedCapabilityError)


class CircuitState(str, Enum):
    CLOSED = "CLOSED"
    OPEN = "OPEN"
    HALF_OPEN = "HALF_OPEN"


class CircuitBreaker:
    def __init__(self, failure_threshold: int = 3, reset_timeout: float = 60.0, *, name: str = "store",
                 clock: Callable[[], float] = time.monotonic) -> None:
        if failure_threshold < 1 or reset_timeout < 0:
            raise InvalidInputError("failure_threshold must be >= 1 and reset_timeout >= 0")
        self.failure_threshold = failure_threshold
        self.reset_timeout = reset_timeout
        self.name = name
        self._clock = clock
        self._lock = threading.Lock()
        self._state = CircuitState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._probe_running = False
        self.opened = 0  # times the circuit opened, for reports

    @property
    def state(self) -> CircuitState:
        with self._lock:
            if self._state is CircuitState.OPEN and self._clock() - self._opened_at >= self.reset_timeout:
                return CircuitState.HALF_OPEN
            return self._state

    @property
    def failure_count(self) -> int:
        return self._failures

    def admit(self) -> bool:
        """Let a call through or raise CircuitBreakerOpenError; True when the call is the half-open
        probe (then exactly one of record_success / record_failure / release_probe must follow)."""
        if self._state is CircuitState.CLOSED:  # the hot path: no lock (a racing open lets one call by)
            return False
        with self._lock:
            if self._state is CircuitState.OPEN:
                waited = self._clock() - self._opened_at
                if waited < self.reset_timeout:
                    raise CircuitBreakerOpenError(
                        f"circuit for {self.name} is open after {self._failures} failures; retry in "
                        f"{self.reset_timeout - waited:.1f}s", store=self.name,
                        retry_after=self.reset_timeout - waited)
                self._state = CircuitState.HALF_OPEN
            if self._state is CircuitState.HALF_OPEN:
                if self._probe_running:
                    raise CircuitBreakerOpenError(f"circuit for {self.name} is half-open and its probe is running",
                                                  store=self.name, retry_after=0.0)
                self._probe_running = True
                return True
            return False

    def release_probe(self) -> None:
        """The probe ended without a verdict on the store (interrupted): let the next call probe."""
        with self._lock:
            self._probe_running = False

    def record_success(self, probe: bool = False) -> None:
        if not probe and not self._failures:  # the hot path: nothing to reset, no lock
            return
        with self._lock:
            if probe:
                self._probe_running = False
                self._state = CircuitState.CLOSED
            self._failures = 0

    def record_failure(self, probe: bool = False) -> None:
        with self._lock:
            self._failures += 1
            if probe:
                self._probe_running = False
            if probe or (self._state is CircuitState.CLOSED and self._failures >= self.failure_threshold):
                self._state = CircuitState.OPEN
                self._opened_at = self._clock()
                self.opened += 1

    def execute(self, func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        probe = self.admit()
        try:
            result = func(*args, **kwargs)
        except NOT_STORE_FAILURES:
            if probe:  # the store answered: it is alive
                self.record_success(probe=True)
            raise
        except Exception:
            self.record_failure(probe)
            raise
        except BaseException:
            if probe:
                self.release_probe()
            raise
        self.record_success(probe)
        return result

    def __call__(self, func: Callable[..., T]) -> Callable[..., T]:
        @wraps(func)
        def guarded(*args: Any, **kwargs: Any) -> T:
            return self.execute(func, *args, **kwargs)

        return guarded

    def snapshot(self) -> dict[str, Any]:
        """State, consecutive failures and times opened, for stats() and metrics."""
        return {"state": self.state.value, "failures": self._failures, "opened": self.opened,
                "failure_threshold": self.failure_threshold, "reset_timeout": self.reset_timeout}

    def reset(self) -> None:
        with self._lock:
            self._state = CircuitState.CLOSED
            self._failures = 0
            self._probe_running = False

    def __repr__(self) -> str:
        return f"CircuitBreaker({self.name}, {self.state.value}, failures={self._failures})"
