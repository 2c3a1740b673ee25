"""A read-through cache: bounded (LRU), optionally expiring, thread-safe, with statistics.

A read-through fill races with commits: a reader that read the store before a
commit and fills the cache after the commit's invalidation would cache the old
value (forever, without a TTL). So a fill carries a token taken before the
store was read (``token(key)``, or implicitly the calling thread's last miss on
that key in ``get``), and ``set`` refuses it if the key was invalidated since.
Invalidations are counted by a generation number; the cache remembers the
generation of the last invalidation of recently invalidated keys (bounded),
and of everything older only the newest generation it forgot, which refuses
at worst a fill that would have been safe, never admits a stale one.
"""

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
        #: Fills refused because their key was invalidated while the value was being read.
        self.stale_fills = 0
        self._generation = 0  # number of invalidations so far
        self._invalidated: OrderedDict[str, int] = OrderedDict()  # key -> generation of its last invalidation
        self._forgotten = 0  # newest generation dropped from _invalidated (clear() counts for every key)
        self._local = threading.local()  # this thread's last miss: (key, token)

    def token(self, key: str) -> int:
        """Take before reading the store for ``key``; pass to ``set`` with the value read."""
        with self._lock:
            return self._generation

    def get(self, key: str) -> Any:
        with self._lock:
            entry = self._data.get(key)
            if entry is None or (self.ttl is not None and time.monotonic() - entry[0] > self.ttl):
                if entry is not None:
                    del self._data[key]
                self.misses += 1
                self._local.miss = (key, self._generation)  # the token of the fill that follows a miss
                return None
            self._data.move_to_end(key)
            self.hits += 1
            return entry[1]

    def set(self, key: str, value: Any, token: int | None = None) -> bool:
        """Cache ``value``; False (nothing cached) if ``key`` was invalidated after ``token`` was taken.

        Without a token, the token of this thread's last miss on ``key`` is used, so a plain
        get-miss / read the store / set sequence is safe; a set with no miss before it caches.
        """
        with self._lock:
            miss = getattr(self._local, "miss", None)
            if miss is not None and miss[0] == key:
                self._local.miss = None
                if token is None:
                    token = miss[1]
            if token is not None and self._invalidated.get(key, self._forgotten) > token:
                self.stale_fills += 1
                return False
            self._data[key] = (time.monotonic(), value)
            self._data.move_to_end(key)
            while len(self._data) > self.capacity:
                self._data.popitem(last=False)
                self.evictions += 1
            return True

    def invalidate(self, key: str) -> None:
        """Drop ``key`` (cached or not) and refuse fills read before now. Never raises."""
        with self._lock:
            self._generation += 1
            self._invalidated[key] = self._generation
            self._invalidated.move_to_end(key)
            while len(self._invalidated) > self.capacity:
                _, self._forgotten = self._invalidated.popitem(last=False)
            self._data.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._generation += 1
            self._forgotten = self._generation
            self._invalidated.clear()
            self._data.clear()

    def __len__(self) -> int:
        return len(self._data)
