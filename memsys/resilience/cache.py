"""A read-through cache: bounded (LRU), optionally expiring, thread-safe, with statistics."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import Any

from memsys.domain.errors import InvalidInputError


class ReadThroughCache:
    def __init__(self, capacity: int = 4096, ttl: float | None = None) -> None:
        if capacity < 1 or (ttl is not None and ttl <= 0):
            raise InvalidInputError("cache capacity must be >= 1 and ttl > 0 when given")
        self.capacity = capacity
        self.ttl = ttl
        self._data: OrderedDict[str, tuple[float, Any]] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = self.evictions = 0

    def get(self, key: str) -> Any:
        with self._lock:
            entry = self._data.get(key)
            if entry is None or (self.ttl is not None and time.monotonic() - entry[0] > self.ttl):
                if entry is not None:
                    del self._data[key]
                self.misses += 1
                return None
            self._data.move_to_end(key)
            self.hits += 1
            return entry[1]

    def set(self, key: str, value: Any) -> None:
        with self._lock:
            self._data[key] = (time.monotonic(), value)
            self._data.move_to_end(key)
            while len(self._data) > self.capacity:
                self._data.popitem(last=False)
                self.evictions += 1

    def invalidate(self, key: str) -> None:
        with self._lock:
            self._data.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()

    def __len__(self) -> int:
        return len(self._data)
