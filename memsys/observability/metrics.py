"""In-process counters and latency samples, cheap enough for the commit path."""

from __future__ import annotations

import threading
from collections import defaultdict


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
