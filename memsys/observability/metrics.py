"""In-process counters and latency samples, cheap enough for the commit path."""

from __future__ import annotations

import bisect
import math
import threading
from collections import defaultdict
from typing import Any


class Metrics:
    """Named counters and bounded latency samples; ``snapshot()`` for reports and tests."""

    def __init__(self, max_samples: int = 10_000) -> None:
        self._lock = threading.Lock()
        self._counters: dict[str, int] = defaultdict(int)
        self._samples: dict[str, list[float]] = defaultdict(list)
        self._max = max_samples

    def incr(self, name: str, by: int = 1) -> None:
        with self._lock:
            self._counters[name] += by

    def observe(self, name: str, value: float) -> None:
        with self._lock:
            samples = self._samples[name]
            if len(samples) >= self._max:
                samples[len(samples) // 2:] = []  # keep the older half, bounded memory
            samples.append(value)

    def counter(self, name: str) -> int:
        with self._lock:
            return self._counters.get(name, 0)

    def snapshot(self) -> dict[str, object]:
        with self._lock:
            return {"counters": dict(self._counters),
                    "samples": {k: list(v) for k, v in self._samples.items()}}


#: Upper bounds (seconds) of the latency buckets of every store call, from 50 µs (an LMDB read)
#: to 10 s (a deadline); Prometheus' own defaults start at 5 ms, too coarse for embedded stores.
LATENCY_BUCKETS: tuple[float, ...] = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                      0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

#: How a store call ended. "error" is the store's failure (it trips the breaker and counts in the
#: error rate); "invalid" is the caller's (bad input, a missing item, a conflict); "rejected"
#: never reached the store (its circuit was open).
OUTCOMES = ("ok", "error", "invalid", "rejected")


class CallStats:
    """Calls of one operation on one store: counts by outcome and a latency histogram.

    Recording is a bisect and a few integer updates under an uncontended lock: cheap enough
    for every call on the commit path.
    """

    __slots__ = ("_lock", "outcomes", "bucket_counts", "total_seconds", "observed")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.outcomes = dict.fromkeys(OUTCOMES, 0)
        self.bucket_counts = [0] * (len(LATENCY_BUCKETS) + 1)  # the last one is +Inf
        self.total_seconds = 0.0
        self.observed = 0

    def record(self, outcome: str, seconds: float | None) -> None:
        with self._lock:
            self.outcomes[outcome] += 1
            if seconds is not None:
                self.bucket_counts[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
                self.total_seconds += seconds
                self.observed += 1

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            outcomes = dict(self.outcomes)
            counts = list(self.bucket_counts)
            total, observed = self.total_seconds, self.observed
        calls = outcomes["ok"] + outcomes["error"] + outcomes["invalid"]
        cumulative, running = [], 0
        for bound, n in zip((*LATENCY_BUCKETS, math.inf), counts):
            running += n
            cumulative.append((bound, running))
        return {"calls": calls, **outcomes,
                "error_rate": outcomes["error"] / calls if calls else 0.0,
                "latency": {"buckets": cumulative, "sum": total, "count": observed,
                            "p50": _quantile(cumulative, 0.5), "p99": _quantile(cumulative, 0.99)}}


def _quantile(cumulative: list[tuple[float, int]], q: float) -> float | None:
    """The upper bound of the bucket holding quantile ``q`` (None before any call)."""
    total = cumulative[-1][1] if cumulative else 0
    if not total:
        return None
    rank = q * total
    for bound, running in cumulative:
        if running >= rank:
            return bound
    return math.inf
