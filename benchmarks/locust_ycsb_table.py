"""YCSB A-F throughput per store: one headless locust run per (store, workload), a markdown table.

    python benchmarks/locust_ycsb_table.py --records 10000 --seconds 20 --out benchmarks/results/ycsb
    python benchmarks/locust_ycsb_table.py --stores lmdb,duckdb --workloads A,C --seconds 5

Each run is its own process (locust patches the standard library with gevent) with one user:
memsys calls do not yield, so a locust process gives one call at a time and the figure is what
one client thread gets. Stores are built fresh per store (preloaded once, reused by the six
workloads in order A-F, as YCSB's loading phase and run phases do) with the adapters' default
durability. Writes ycsb.md and ycsb.json (per run: ops/s, p50/p99 in microseconds, failures), and
locust's CSV files per run (STORE-WORKLOAD_*.csv, with the failures and exceptions seen).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
STORES = ["lmdb", "duckdb", "kuzu", "tinydb", "networkx", "faiss", "chroma"]
PATHS = {"lmdb": "lmdb", "duckdb": "items.duckdb", "kuzu": "graph.kuzu", "tinydb": "items.json",
         "networkx": "graph", "faiss": "faiss", "chroma": "chroma"}


def run(store: str, spec: str, workload: str, records: int, seconds: int, folder: Path) -> dict:
    summary = folder / f"{store}-{workload}.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEMSYS_LOCUST_")}
    done = subprocess.run([sys.executable, "-m", "locust", "-f", str(HERE / "locustfile.py"), "--headless",
                           "-u", "1", "-r", "1", "-t", f"{seconds}s", "--only-summary", "--store", spec,
                           "--workload", workload, "--records", str(records), "--max-fail-ratio", "1",
                           "--summary-json", str(summary), "--csv", str(folder / f"{store}-{workload}")],
                          capture_output=True, text=True, env=env,
                          timeout=seconds * 10 + 600)
    if not summary.exists():
        return {"store": store, "workload": workload, "error": (done.stderr or done.stdout)[-500:]}
    figures = json.loads(summary.read_text())
    return {"store": store, "workload": workload, "ops_per_s": figures["ops_per_s"], "p50_us": figures["p50_us"],
            "p99_us": figures["p99_us"], "requests": figures["requests"], "failures": figures["failures"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stores", default=",".join(STORES))
    parser.add_argument("--workloads", default="A,B,C,D,E,F")
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--out", default=str(HERE / "results" / "ycsb"))
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for store in args.stores.split(","):
        folder = Path(tempfile.mkdtemp(prefix=f"memsys-ycsb-{store}-"))
        spec = f"{store}:{folder / PATHS[store]}"
        for workload in args.workloads.split(","):
            row = run(store, spec, workload, args.records, args.seconds, out)
            rows.append(row)
            print(json.dumps(row), flush=True)
    workloads = args.workloads.split(",")
    lines = [f"YCSB, {args.records:,} records of 10 x 100 bytes, one locust user, {args.seconds} s a run; "
             f"{datetime.now(timezone.utc):%Y-%m-%d}, {os.cpu_count()} CPUs. ops/s (p50 / p99 in ms).", "",
             "| store | " + " | ".join(workloads) + " |", "|---|" + "---:|" * len(workloads)]
    for store in args.stores.split(","):
        cells = []
        for workload in workloads:
            row = next(r for r in rows if r["store"] == store and r["workload"] == workload)
            if "error" in row or not row["requests"]:
                cells.append("error")
                continue
            cells.append(f"{row['ops_per_s']:,.0f} ({row['p50_us'] / 1000:.2f} / {row['p99_us'] / 1000:.2f})"
                         + (f", {row['failures']} failed" if row["failures"] else ""))
        lines.append(f"| {store} | " + " | ".join(cells) + " |")
    (out / "ycsb.md").write_text("\n".join(lines) + "\n")
    (out / "ycsb.json").write_text(json.dumps(rows, indent=1))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
