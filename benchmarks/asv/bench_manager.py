"""asv: memsys through the MemoryManager: per-adapter operations as transactions, the
cross-store commit at 1k, 10k and 100k items, recovery time after a crash, the fallback read
path and the circuit breaker's overhead.

Writes prepare their input in ``setup`` and time one call per sample (see bench_adapters).
"""

from __future__ import annotations

import itertools
import os
import random
import shutil
from typing import Any

from . import _stores

MANAGER_SIZES = [s for s in _stores.SIZES if s <= 10_000] or _stores.SIZES[:1]
_TITLES = {"lmdb": "LMDB", "duckdb": "DuckDB", "kuzu": "Kuzu", "tinydb": "TinyDB", "networkx": "NetworkX",
           "faiss": "FAISS", "chroma": "Chroma"}


def _manager(root: str, backend: str, items: int, writes: bool) -> Any:
    """A manager over one store (this process's copy when it writes), opened once per process."""
    key = ("manager", backend, str(items), str(writes))
    manager = _stores.recall(key)
    if manager is None:
        from memsys.application.manager import MemoryManager

        store = _stores.opened(root, backend, items, writes=writes)
        manager = _stores.remember(key, MemoryManager(
            {backend: store}, transaction_log=os.path.join(os.path.dirname(store.path), "txlog")))
    return manager


class _ManagerReads:
    backend = ""
    params = [MANAGER_SIZES]
    param_names = ["items"]
    timeout = 600
    warmup_time = 2.0
    setup_cache = staticmethod(_stores.build_stores)

    def setup(self, root: str, items: int) -> None:
        _manager(root, self.backend, items, writes=False)  # opened before timing (see bench_adapters)

    def time_retrieve(self, root: str, items: int) -> None:
        manager = _manager(root, self.backend, items, writes=False)
        ids = getattr(self, "_ids", None)
        if ids is None:
            rng = random.Random(1)
            ids = self._ids = itertools.cycle([f"pre-{rng.randrange(items):07d}" for _ in range(1024)])
        manager.retrieve(next(ids), store=self.backend)

    def time_query(self, root: str, items: int) -> None:
        from memsys.application.query_router import QueryRouter

        manager = _manager(root, self.backend, items, writes=False)
        router = getattr(self, "_router", None) or QueryRouter(manager)
        self._router = router
        router.query({"memory_type": "KNOWLEDGE", "limit": 10})


class _ManagerWrites:
    backend = ""
    params = [MANAGER_SIZES]
    param_names = ["items"]
    timeout = 600
    number = 1
    repeat = (10, 40, 10.0)
    setup_cache = staticmethod(_stores.build_stores)
    _serial = itertools.count()

    def setup(self, root: str, items: int) -> None:
        self.manager = _manager(root, self.backend, items, writes=True)
        n = next(self._serial)
        self.new = _stores.item(n, f"mnew{id(self)}")
        self.batch = [_stores.item(i, f"mbatch{n}-{id(self)}") for i in range(100)]
        self.victim = _stores.item(n, f"mvictim{id(self)}")
        self.manager.store(self.victim, [self.backend])

    def time_store(self, root: str, items: int) -> None:
        self.manager.store(self.new, [self.backend])

    def time_delete(self, root: str, items: int) -> None:
        self.manager.delete(self.victim.id, [self.backend])

    def time_store_many_100(self, root: str, items: int) -> None:
        with self.manager.with_transaction([self.backend]):
            self.manager.adapters[self.backend].store_many(self.batch)


def _classes() -> dict[str, type]:
    made: dict[str, type] = {}
    for backend in _stores.BACKENDS:
        for suffix, base in (("Reads", _ManagerReads), ("Writes", _ManagerWrites)):
            name = f"Manager{_TITLES[backend]}{suffix}"
            made[name] = type(name, (base,), {"backend": backend, "__module__": __name__, "__qualname__": name})
    return made


globals().update(_classes())


class CrossStoreCommit:
    """One transaction writing one item to each of LMDB, DuckDB and Kuzu, on stores of 1k-100k items:
    the cost should follow the write set, not the store size."""

    params = [_stores.SIZES]
    param_names = ["items"]
    timeout = 600
    number = 1
    repeat = (10, 60, 15.0)
    setup_cache = staticmethod(_stores.build_stores)
    _serial = itertools.count()

    def setup(self, root: str, items: int) -> None:
        self.manager = _stores.opened_manager(root, items)
        n = next(self._serial)
        self.items = [_stores.item(3 * n + k, f"commit{id(self)}") for k in range(3)]

    def time_commit(self, root: str, items: int) -> None:
        with self.manager.with_transaction(["lmdb", "duckdb", "kuzu"]):
            for store, item in zip(("lmdb", "duckdb", "kuzu"), self.items):
                self.manager.adapters[store].store(item)


class Recovery:
    """Opening a MemoryManager after a crash that left N committed transactions to redo."""

    params = [_stores.RECOVERY_RECORDS]
    param_names = ["commits_in_log"]
    timeout = 900
    number = 1
    repeat = (3, 10, 60.0)
    setup_cache = staticmethod(_stores.build_stores)
    _serial = itertools.count()

    def setup(self, root: str, records: int) -> None:
        self.folder = os.path.join(os.getcwd(), f"recover-{os.getpid()}-{next(self._serial)}")
        shutil.copytree(os.path.join(root, f"crashed-{records}"), self.folder,
                        ignore=shutil.ignore_patterns("*.memsys-lock"))
        self.manager = None

    def teardown(self, root: str, records: int) -> None:
        if self.manager is not None:
            self.manager.close()
        shutil.rmtree(self.folder, ignore_errors=True)

    def time_recover(self, root: str, records: int) -> None:
        self.manager = _stores.manager_over(self.folder)


class Fallback:
    """get_with_fallback over LMDB (first) and DuckDB: healthy, LMDB failing every read (its
    breaker never opening), and LMDB's circuit open."""

    params = [["healthy", "primary_failing", "circuit_open"]]
    param_names = ["primary"]
    timeout = 600
    warmup_time = 2.0
    setup_cache = staticmethod(_stores.build_stores)

    def _fallback(self, root: str, primary: str) -> Any:
        key = ("fallback", primary)
        if _stores.recall(key) is None:
            from memsys.application.manager import MemoryManager
            from memsys.testing.faults import FaultInjector

            small = _stores.SIZES[0]
            lmdb = _stores.remember(("fallback-lmdb", primary), _stores.open_store(
                "lmdb", _stores.copy_of(root, f"lmdb-{small}", primary)))
            duckdb = _stores.remember(("fallback-duckdb", primary), _stores.open_store(
                "duckdb", _stores.copy_of(root, f"duckdb-{small}", primary)))
            threshold = 1 if primary == "circuit_open" else 10**9
            manager = MemoryManager({"lmdb": lmdb, "duckdb": duckdb}, store_priorities=["lmdb", "duckdb"],
                                    failure_threshold=threshold, reset_timeout=10**6)
            if primary != "healthy":
                FaultInjector(lmdb, seed=0).fail("retrieve")
            if primary == "circuit_open":
                manager.get_with_fallback("pre-0000000")  # the one failure that opens LMDB's circuit
            _stores.remember(key, manager)
        return _stores.recall(key)

    def setup(self, root: str, primary: str) -> None:
        self._fallback(root, primary)  # built before timing (see bench_adapters)

    def time_get_with_fallback(self, root: str, primary: str) -> None:
        manager = self._fallback(root, primary)
        ids = getattr(self, "_ids", None)
        if ids is None:
            ids = self._ids = itertools.cycle([f"pre-{i:07d}" for i in range(0, _stores.SIZES[0], 7)])
        manager.get_with_fallback(next(ids))


class Breaker:
    """The circuit breaker around a call (CLOSED, the common case) against the bare call."""

    params = [["bare", "breaker"]]
    param_names = ["call"]
    timeout = 600
    warmup_time = 2.0
    setup_cache = staticmethod(_stores.build_stores)

    def setup(self, root: str, call: str) -> None:
        _stores.opened(root, "lmdb", _stores.SIZES[0], writes=False)  # opened before timing

    def time_retrieve(self, root: str, call: str) -> None:
        store = _stores.opened(root, "lmdb", _stores.SIZES[0], writes=False)
        breaker = getattr(self, "_breaker", None)
        if breaker is None:
            from memsys.resilience.circuit_breaker import CircuitBreaker

            breaker = self._breaker = CircuitBreaker(3, 30.0, name="lmdb")
        if call == "bare":
            store.retrieve("pre-0000042")
        else:
            breaker.execute(store.retrieve, "pre-0000042")
