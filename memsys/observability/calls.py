"""The one place a MemoryManager's calls reach a store: breaker, timing, stats, log line, span.

Every call the manager and its coordinator make on a store (prepare, apply, recovery, flush,
retrieve, search, count) goes through its ``StoreMonitor.call``:

* the store's circuit breaker admits it or rejects it at once (CircuitBreakerOpenError,
  outcome "rejected": the store never sees it); its outcome is recorded in the breaker;
* its duration goes into the store's latency histogram for that operation, its outcome
  into the counts (``memsys.observability.metrics.CallStats``);
* at DEBUG, the store's own logger (``memsys.adapters.<backend>``) gets one line with the
  store, operation, duration, outcome and transaction id (also as record attributes
  ``memsys_store``, ``memsys_operation``, ``memsys_duration``, ``memsys_outcome``,
  ``memsys_transaction_id``); nothing is logged at INFO or above here;
* reads get an OpenTelemetry span when an SDK is configured.

With DEBUG off and no SDK this costs two clock reads, a bisect and a few integer updates.
A call made inside another monitored call on the same thread (the redo operations inside a
recovery) passes ``breaker="none"``: the outer call holds the breaker's verdict.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from memsys.domain.errors import CircuitBreakerOpenError
from memsys.observability.metrics import CallStats
from memsys.observability.tracing import Tracer, get_tracer
from memsys.resilience.circuit_breaker import NOT_STORE_FAILURES, CircuitBreaker

T = TypeVar("T")

_local = threading.local()


def in_monitored_call() -> bool:
    """True while a StoreMonitor call runs on this thread (the adapter then logs nothing of its own)."""
    return getattr(_local, "depth", 0) > 0


def adapter_logger(store: Any) -> logging.Logger:
    """``memsys.adapters.<backend>``: one logger per adapter kind."""
    backend = getattr(store, "backend", None) or type(store).__name__.lower()
    return logging.getLogger(f"memsys.adapters.{backend}")


class StoreMonitor:
    def __init__(self, name: str, store: Any, breaker: CircuitBreaker | None = None,
                 tracer: Tracer | None = None) -> None:
        self.name = name
        self.store = store
        self.breaker = breaker if breaker is not None else CircuitBreaker(name=name)
        self.tracer = tracer if tracer is not None else get_tracer()
        self.logger = adapter_logger(store)
        self.operations: dict[str, CallStats] = {}
        self._lock = threading.Lock()

    def _stats(self, operation: str) -> CallStats:
        stats = self.operations.get(operation)
        if stats is None:
            with self._lock:
                stats = self.operations.setdefault(operation, CallStats())
        return stats

    def call(self, operation: str, fn: Callable[..., T], *args: Any, txid: str = "", breaker: str = "guard",
             trips: Callable[[BaseException], bool] | None = None, span: bool = False, **kwargs: Any) -> T:
        """Run ``fn(*args, **kwargs)`` on the store as ``operation``.

        ``breaker``: "guard" (admitted by the breaker, outcome recorded), "force" (not admitted:
        an operator's explicit call; success closes the circuit, failure counts) or "none".
        ``trips(exc)`` may say that a store error is about one operation, not the store's
        health (it is then counted as an error but does not trip the breaker).
        """
        stats = self.operations.get(operation) or self._stats(operation)
        debug = self.logger.isEnabledFor(logging.DEBUG)
        probe = False
        if breaker == "guard":
            try:
                probe = self.breaker.admit()
            except CircuitBreakerOpenError as exc:
                stats.record("rejected", None)
                if debug:
                    self._log(operation, 0.0, "rejected", txid, exc)
                raise
        if span and self.tracer.active:
            tracer_span = self.tracer.start_as_current_span(
                f"memsys.store.{operation}", attributes={"memsys.store": self.name, "memsys.operation": operation,
                                                        "memsys.transaction_id": txid})
            with tracer_span:
                return self._run(operation, fn, args, kwargs, stats, debug, probe, txid, breaker, trips)
        return self._run(operation, fn, args, kwargs, stats, debug, probe, txid, breaker, trips)

    def _run(self, operation: str, fn: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any],
             stats: CallStats, debug: bool, probe: bool, txid: str, breaker: str,
             trips: Callable[[BaseException], bool] | None) -> T:
        if debug:  # tracked only when someone reads it: the adapter's own DEBUG line
            _local.depth = getattr(_local, "depth", 0) + 1
        started = time.perf_counter()
        try:
            result = fn(*args, **kwargs)
        except NOT_STORE_FAILURES as exc:
            elapsed = time.perf_counter() - started
            stats.record("invalid", elapsed)
            if probe or breaker == "force":  # the store answered: it is alive
                self.breaker.record_success(probe=True)
            if debug:
                self._log(operation, elapsed, "invalid", txid, exc)
            raise
        except Exception as exc:
            elapsed = time.perf_counter() - started
            stats.record("error", elapsed)
            if breaker != "none":
                if trips is None or trips(exc):
                    self.breaker.record_failure(probe)
                elif probe or breaker == "force":
                    self.breaker.record_success(probe=True)
            if debug:
                self._log(operation, elapsed, "error", txid, exc)
            raise
        except BaseException as exc:  # interrupted (a simulated crash): no verdict on the store
            if probe:
                self.breaker.release_probe()
            if debug:
                self._log(operation, time.perf_counter() - started, "interrupted", txid, exc)
            raise
        finally:
            if debug:
                _local.depth -= 1
        elapsed = time.perf_counter() - started
        stats.record("ok", elapsed)
        if breaker != "none":
            self.breaker.record_success(probe or breaker == "force")
        if debug:
            self._log(operation, elapsed, "ok", txid, None)
        return result

    def guard(self, fn: Callable[..., T], *args: Any, trips: Callable[[BaseException], bool] | None = None,
              **kwargs: Any) -> T:
        """The breaker alone around ``fn``, one verdict for a call made of several monitored ones
        (an apply and its retries): admitted or CircuitBreakerOpenError; a failure counts once."""
        probe = self.breaker.admit()
        try:
            result = fn(*args, **kwargs)
        except NOT_STORE_FAILURES:
            if probe:
                self.breaker.record_success(probe=True)
            raise
        except Exception as exc:
            if trips is None or trips(exc):
                self.breaker.record_failure(probe)
            elif probe:
                self.breaker.record_success(probe=True)
            raise
        except BaseException:
            if probe:
                self.breaker.release_probe()
            raise
        self.breaker.record_success(probe)
        return result

    def _log(self, operation: str, seconds: float, outcome: str, txid: str, exc: BaseException | None) -> None:
        error = f" error={type(exc).__name__}: {exc}" if exc is not None else ""
        self.logger.debug("store=%s op=%s duration_ms=%.3f outcome=%s txid=%s%s", self.name, operation,
                          seconds * 1000.0, outcome, txid or "-", error,
                          extra={"memsys_store": self.name, "memsys_operation": operation,
                                 "memsys_duration": seconds, "memsys_outcome": outcome,
                                 "memsys_transaction_id": txid or None})

    def snapshot(self) -> dict[str, Any]:
        """Per operation: calls, outcomes, error rate and latency histogram; and in all."""
        with self._lock:
            operations = dict(self.operations)
        per_op = {op: stats.snapshot() for op, stats in sorted(operations.items())}
        calls = sum(s["calls"] for s in per_op.values())
        errors = sum(s["error"] for s in per_op.values())
        return {"operations": per_op, "calls": calls, "errors": errors,
                "rejected": sum(s["rejected"] for s in per_op.values()),
                "error_rate": errors / calls if calls else 0.0}


__all__ = ["StoreMonitor", "adapter_logger", "in_monitored_call"]
