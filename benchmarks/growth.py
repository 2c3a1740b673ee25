"""Does a write's cost grow with the store? Every adapter, 1k to 100k items, in one run.

    python -m benchmarks.growth                    # 1k, 10k, 100k items; table + JSON + plot in benchmarks/results/
    python -m benchmarks.growth --sizes 1000 10000 --backends tinydb lmdb   # a quick look

For each adapter and store size: preload the store (batches), then time single durable
writes of new items and updates of existing ones, each committed through a MemoryManager
transaction over that store alone (what the README's "cost follows the write set" claims),
median of ``--writes`` commits. The figure to read is the growth ratio: median at the largest
size / median at the smallest, measured in the same run (absolute times swing between runs).
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

from benchmarks.adapter_ratios import make_items

BACKENDS = ("lmdb", "duckdb", "kuzu", "tinydb", "networkx", "faiss", "chroma")
PATHS = {"tinydb": "items.json", "networkx": "graph", "faiss": "faiss", "chroma": "chroma",
         "kuzu": "graph.kuzu", "lmdb": "lmdb", "duckdb": "items.duckdb"}


def open_adapter(backend: str, folder: str) -> Any:
    from memsys.adapters import adapter_class

    options: dict[str, Any] = {"faiss": {"dimension": 64}, "chroma": {"dimension": 64},
                               "lmdb": {"map_size": 1 << 30}}.get(backend, {})
    return adapter_class(backend)(path=os.path.join(folder, PATHS[backend]), **options)


def measure(backend: str, size: int, writes: int, root: str) -> dict[str, float]:
    from memsys.application.manager import MemoryManager

    folder = tempfile.mkdtemp(prefix=f"{backend}-{size}-", dir=root)
    adapter = open_adapter(backend, folder)
    items = make_items(size, seed=1, prefix="pre")
    for start in range(0, size, 2000):  # one engine call per batch: the preload is not what is measured
        adapter.store_many(items[start:start + 2000])
    manager = MemoryManager({backend: adapter}, transaction_log=os.path.join(folder, "txlog"))
    new = make_items(writes, seed=2, prefix="new")
    timings: dict[str, list[float]] = {"insert": [], "update": []}
    try:
        for n, item in enumerate(new):
            started = time.perf_counter()
            with manager.with_transaction([backend]):
                adapter.store(item)
            timings["insert"].append(time.perf_counter() - started)
            old = items[(n * 7919) % size]
            started = time.perf_counter()
            with manager.with_transaction([backend]):
                adapter.store(old)
            timings["update"].append(time.perf_counter() - started)
    finally:
        manager.close()
        shutil.rmtree(folder, ignore_errors=True)
    return {kind: statistics.median(values) * 1000 for kind, values in timings.items()}


def run(backends: list[str], sizes: list[int], writes: int) -> list[dict[str, Any]]:
    rows = []
    root = tempfile.mkdtemp(prefix="memsys-growth-")
    try:
        for backend in backends:
            medians = {}
            for size in sizes:
                medians[size] = measure(backend, size, writes, root)
                print(f"{backend:9s} {size:>7,} items: insert {medians[size]['insert']:.3f} ms, "
                      f"update {medians[size]['update']:.3f} ms", file=sys.stderr, flush=True)
            for kind in ("insert", "update"):
                first, last = medians[sizes[0]][kind], medians[sizes[-1]][kind]
                rows.append({"backend": backend, "operation": kind,
                             "ms": {str(s): round(medians[s][kind], 4) for s in sizes},
                             "growth": round(last / first, 3) if first else float("nan")})
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return rows


def markdown(rows: list[dict[str, Any]], sizes: list[int]) -> str:
    head = "| backend | commit of | " + " | ".join(f"{s:,} items (ms)" for s in sizes) + \
           f" | {sizes[-1]:,} / {sizes[0]:,} |"
    lines = [head, "|" + "---|" * (len(sizes) + 3)]
    for row in rows:
        cells = " | ".join(f"{row['ms'][str(s)]:.3f}" for s in sizes)
        lines.append(f"| {row['backend']} | {row['operation']} | {cells} | {row['growth']:.2f} |")
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], sizes: list[int], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for row in rows:
        if row["operation"] == "insert":
            ax.plot(sizes, [row["ms"][str(s)] for s in sizes], marker="o", label=row["backend"])
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("items in the store")
    ax.set_ylabel("median commit of one new item (ms)")
    ax.set_title("Commit cost against store size (flat = independent of size)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=BACKENDS)
    parser.add_argument("--sizes", nargs="+", type=int, default=[1_000, 10_000, 100_000])
    parser.add_argument("--writes", type=int, default=200, help="commits timed per size (median)")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    args = parser.parse_args(argv)
    if sorted(args.sizes) != args.sizes or args.sizes[0] < 1 or args.writes < 1:
        parser.error("--sizes must be positive and ascending; --writes at least 1")
    rows = run(args.backends, args.sizes, args.writes)
    table = markdown(rows, args.sizes)
    print(table)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "growth.json"), "w") as f:
        json.dump({"sizes": args.sizes, "writes": args.writes, "rows": rows}, f, indent=1)
    plot(rows, args.sizes, os.path.join(args.out, "growth.png"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
