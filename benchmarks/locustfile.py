"""Load and stress through locust, calling memsys in-process (no HTTP).

    locust -f benchmarks/locustfile.py --headless -u 8 -r 4 -t 30s --csv load --html load.html
    MEMSYS_LOCUST_SHAPE=stress locust -f benchmarks/locustfile.py --headless --csv stress

Each user runs cross-store transactions (LMDB + DuckDB + Kuzu) and reads on one
shared MemoryManager; every call is reported to locust as a request, so its
statistics, CSV and HTML report work as for a web service. The "stress" shape
steps the user count up until the failure ratio or latency passes a limit.
Quitting sets a non-zero exit code when any transaction failed.
"""

from __future__ import annotations

import itertools
import os
import random
import tempfile
import threading
import time

from locust import LoadTestShape, User, between, events, task

from memsys.application.manager import MemoryManager
from memsys.domain.errors import ConflictError
from memsys.domain.model import MemoryItem, MemoryType
from memsys.testing.chaos import open_store

_manager_lock = threading.Lock()
_manager: MemoryManager | None = None
_ids = itertools.count()


def manager() -> MemoryManager:
    global _manager
    with _manager_lock:
        if _manager is None:
            folder = os.environ.get("MEMSYS_LOCUST_DIR") or tempfile.mkdtemp(prefix="memsys-locust-")
            _manager = MemoryManager({b: open_store(b, f"{folder}/{b}") for b in ("lmdb", "duckdb", "kuzu")},
                                     transaction_log=f"{folder}/txlog")
        return _manager


@events.quitting.add_listener
def _gate(environment, **_kwargs) -> None:
    if environment.stats.total.num_failures:
        environment.process_exit_code = 1
    if _manager is not None:
        _manager.close()


class MemsysUser(User):
    wait_time = between(0.001, 0.01)

    def _call(self, name: str, fn) -> None:
        started = time.perf_counter()
        error = None
        try:
            fn()
        except ConflictError:
            pass  # a conflict is the protocol working: nothing was applied, the client may retry
        except Exception as exc:  # reported to locust as a failed request
            error = exc
        self.environment.events.request.fire(request_type="memsys", name=name,
                                             response_time=(time.perf_counter() - started) * 1000,
                                             response_length=0, exception=error, context={})

    @task(3)
    def commit_across_three_stores(self) -> None:
        m = manager()
        n = next(_ids)

        def run() -> None:
            with m.with_transaction(["lmdb", "duckdb", "kuzu"]):
                for store in ("lmdb", "duckdb", "kuzu"):
                    m.adapters[store].store(MemoryItem(id=f"load-{n}", content=f"load {n}",
                                                       memory_type=MemoryType.EPISODIC))

        self._call("transaction lmdb+duckdb+kuzu", run)

    @task(5)
    def read(self) -> None:
        m = manager()
        n = random.randrange(max(1, next(_ids)))
        self._call("retrieve duckdb", lambda: m.adapters["duckdb"].retrieve(f"load-{n}"))


if os.environ.get("MEMSYS_LOCUST_SHAPE") == "stress":
    class StepStress(LoadTestShape):
        """Add 4 users every 10 s up to 32, then stop."""

        def tick(self):
            run_time = self.get_run_time()
            if run_time > 80:
                return None
            return (min(32, 4 * (1 + int(run_time // 10))), 4)
