"""Load and stress tests of memsys through locust, in-process (no HTTP): YCSB A-F or transactions.

    # YCSB workload A on LMDB, 8 users for 30 s, CSV + HTML, thresholds in the exit status
    locust -f benchmarks/locustfile.py --headless -u 8 -r 8 -t 30s --store lmdb:/tmp/ycsb \\
        --workload A --records 10000 --max-fail-ratio 0.001 --max-p99-ms 20 \\
        --csv ycsb-a --html ycsb-a.html --summary-json ycsb-a.json

    # the store's breaking point: add 2 users every 10 s until p95 > 50 ms or 1 % fail
    locust -f benchmarks/locustfile.py --headless --shape stress --store duckdb:/tmp/y.duckdb \\
        --step-users 2 --step-seconds 10 --max-users 40 --stress-p95-ms 50 --summary-json stress.json

    # distributed over one LMDB (several processes can share it): a master and two workers
    locust -f benchmarks/locustfile.py --headless --master --expect-workers 2 -u 4 -r 4 -t 20s \\
        --store lmdb:/tmp/shared --workload B
    locust -f benchmarks/locustfile.py --worker --master-host 127.0.0.1 --store lmdb:/tmp/shared --workload B

    # under faults: 5 % of reads, scans and writes fail transiently (memsys FaultInjector)
    locust -f benchmarks/locustfile.py --headless -u 4 -t 20s --fault-rate 0.05 --max-fail-ratio 0.1

Every memsys call is one locust request (request type YCSB-<workload>, name = the operation),
so locust's statistics, --csv and --html work as for a web service. Options are documented in
benchmarks/locust_memsys.py; YCSB's definitions are in benchmarks/ycsb.py. The shapes (step,
spike, soak, stress) come with --shape; without it -u/-r/-t apply as usual.

A locust process runs its users on gevent; a memsys call does not yield, so one process gives
one call at a time. More load means more processes: --processes N, or --master with workers.
"""

from __future__ import annotations

import itertools

from locust import constant, task

import locust_memsys
from memsys.domain.model import MemoryItem, MemoryType
import ycsb
from locust_memsys import PROCESS, MemsysShape, MemsysUser  # noqa: F401  (MemsysShape: the shape)


class MemsysLoad(MemsysUser):
    wait_time = constant(0)

    def on_start(self) -> None:
        super().on_start()
        options = self.environment.parsed_options
        self.request_type = locust_memsys._request_type(options)
        if options.workload == "txn":
            self.serial = itertools.count()
            return
        # Inserted ordinals never collide across users or worker processes.
        self.client = ycsb.Client(PROCESS.store, options.workload, options.records, seed=self.rng.randrange(2**32),
                                  insert_from=options.records + (PROCESS.worker_index * 1_000 + self.index) * 10**7)

    @task
    def operation(self) -> None:
        if self.request_type == "txn":
            self.transaction()
            return
        name, thunk = self.client.next()  # YCSB operations: benchmarks/ycsb.py (Client)
        self.call(name, thunk)

    # --- cross-store transactions (--workload txn)

    def transaction(self) -> None:
        manager = PROCESS.manager
        stores = list(manager.adapters)
        n = next(self.serial)
        if n % 8 < 3 or n < 8:
            item_id = f"txn-{PROCESS.worker_index}-{self.index}-{n}"

            def commit() -> None:
                with manager.with_transaction(stores):
                    for store in stores:
                        manager.adapters[store].store(MemoryItem(id=item_id, content=f"load {n}",
                                                                 memory_type=MemoryType.EPISODIC))
            self.call(f"transaction {'+'.join(stores)}", commit)
        else:  # reads from the second store (DuckDB by default): the first one to apply is not the only one read
            target = f"txn-{PROCESS.worker_index}-{self.index}-{self.rng.randrange(n)}"
            reader = stores[min(1, len(stores) - 1)]
            self.call(f"retrieve {reader}", lambda: manager.adapters[reader].retrieve(target))
