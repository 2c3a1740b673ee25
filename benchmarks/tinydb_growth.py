"""What one TinyDB commit costs as the store grows: 1k, 10k and 100k items.

    python benchmarks/tinydb_growth.py                      # 1k, 10k, 100k; 300 commits each
    python benchmarks/tinydb_growth.py --sizes 1000,10000 --commits 100 --json out.json

For each size, a fresh store is filled with N items (one batch), then timed commit by
commit, each writing one item (an update of an existing id, about 370 bytes):

* ``store``: ``adapter.store(item)``, a durable write on its own (one journal record, fsynced);
* ``store_nosync``: the same with ``sync=False``: the CPU cost, without the disk's fsync noise;
* ``transaction``: a MemoryManager transaction over the TinyDB store with a coordinator log
  (the log record is fsynced, TinyDB applies without fsync and is flushed at checkpoints).

The median is the steady cost; the mean includes the compactions (the snapshot is
rewritten when the journal outgrows it, so their cost is spread over as many commits
as the snapshot is large), and max shows the worst single commit. Growth is each
median over the smallest size's. Before the journal, every commit rewrote the whole
JSON file: 12.5-14x slower at 10k items than at 1k.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from typing import Any

if __package__ in (None, ""):  # run as a script: make ``benchmarks`` and ``memsys`` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.adapter_ratios import make_items  # noqa: E402
from memsys.adapters.tinydb_store import TinyDBMemoryAdapter  # noqa: E402
from memsys.application.manager import MemoryManager  # noqa: E402


def _timings(commit: Any, items: list, commits: int) -> list[float]:
    times = []
    for n in range(commits):
        item = items[(n * 7919) % len(items)]
        update = item.replace(content=f"{item.content} #{n}", version=item.version + n + 1)
        start = time.perf_counter()
        commit(update)
        times.append(time.perf_counter() - start)
    return times


def measure(size: int, commits: int, workdir: str) -> dict[str, Any]:
    items = make_items(size, seed=size)
    result: dict[str, Any] = {"items": size}

    path = os.path.join(workdir, f"store-{size}.json")
    store = TinyDBMemoryAdapter(path=path)
    start = time.perf_counter()
    store.store_many(items)
    result["fill_s"] = time.perf_counter() - start
    result["store"] = _summary(_timings(store.store, items, commits))
    store.close()
    result["files_bytes"] = sum(os.path.getsize(p) for p in (path, path + ".journal") if os.path.exists(p))

    store = TinyDBMemoryAdapter(path=path, sync=False)
    result["store_nosync"] = _summary(_timings(store.store, items, commits))
    store.close()

    path = os.path.join(workdir, f"managed-{size}.json")
    store = TinyDBMemoryAdapter(path=path, sync=False)
    store.store_many(items)
    store.flush()
    manager = MemoryManager({"tinydb": store}, transaction_log=os.path.join(workdir, f"txlog-{size}"))

    def transaction(item: Any) -> None:
        with manager.with_transaction(["tinydb"]):
            manager.adapters["tinydb"].store(item)

    result["transaction"] = _summary(_timings(transaction, items, commits))
    manager.close()
    return result


def _summary(times: list[float]) -> dict[str, float]:
    us = sorted(t * 1e6 for t in times)
    return {"median_us": statistics.median(us), "mean_us": statistics.fmean(us),
            "p95_us": us[int(0.95 * (len(us) - 1))], "max_us": us[-1]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000,10000,100000", help="comma-separated store sizes")
    parser.add_argument("--commits", type=int, default=300, help="timed commits per size and kind")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    workdir = tempfile.mkdtemp(prefix="tinydb-growth-")
    try:
        results = [measure(size, args.commits, workdir) for size in sizes]
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    base = results[0]
    print(f"{'items':>8} {'kind':<12} {'median us':>10} {'mean us':>10} {'p95 us':>10} {'max us':>10} "
          f"{'growth':>7}")
    for result in results:
        for kind in ("store", "store_nosync", "transaction"):
            figures = result[kind]
            growth = figures["median_us"] / base[kind]["median_us"]
            result[kind]["growth"] = growth
            print(f"{result['items']:>8} {kind:<12} {figures['median_us']:>10.0f} {figures['mean_us']:>10.0f} "
                  f"{figures['p95_us']:>10.0f} {figures['max_us']:>10.0f} {growth:>6.2f}x")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
