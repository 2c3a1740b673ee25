"""The README's table of current figures, measured in one run on this machine.

    python -m benchmarks.figures                       # about 5-10 minutes on two busy cores
    python -m benchmarks.figures --quick               # a smaller dose (a minute or two), same tables
    python -m benchmarks.figures --growth              # also re-measure growth 1k -> 100k (slow)

Writes benchmarks/results/figures.md (markdown tables headed by the date and the machine:
uname, CPU count, Python, load average) and figures.json (every number, for tools). Tables:

1. Per adapter and operation (store, retrieve, delete, search, batch; vector search and graph
   traversal where the adapter has them): ops/s of one caller, p50 and p99 latency, each call
   timed on its own, adapters with their default durability, ``--records`` items preloaded;
   "vs raw" is memsys / the raw library from benchmarks.adapter_ratios in this same run.
2. Cross-store transaction cost (benchmarks.transaction_ratios, this run).
3. Commit cost growth from 1k to 100k items per adapter: benchmarks/results/growth.json when it
   is there (measured by ``python -m benchmarks.growth``; its date is the file's), re-measured
   with ``--growth``.
4. YCSB A-F throughput per store: one in-process client (benchmarks.ycsb.Client, the same
   operations the locust user runs) over records preloaded into the store.
5. Load under faults: YCSB B on LMDB through the port-fault wrappers (latency, transient
   failures) and YCSB C on a Chroma server direct / through Toxiproxy / with a latency toxic.

Absolute rates move with the machine's load (two shared cores here); read ratios and orders of
magnitude. Ratios are measured back to back in the same run, which is why they are comparable.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

if __name__ == "__main__":
    # One thread each for FAISS's OpenMP and BLAS, set before numpy loads: figures per caller,
    # without a pool of idle spinning threads charged to whatever runs next.
    for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_var, "1")

from benchmarks import adapter_ratios, growth, transaction_ratios, ycsb  # noqa: E402

BACKENDS = ["lmdb", "duckdb", "kuzu", "tinydb", "networkx", "faiss", "chroma"]
RESULTS = Path(__file__).resolve().parent / "results"
DIMENSION = 64
BATCH = 100
#: Operations whose "vs raw" ratio benchmarks.adapter_ratios measures (ours -> its name there).
RAW_NAMES = {"store": "store", "retrieve": "retrieve", "batch": "batch_store"}


@dataclasses.dataclass
class Dose:
    records: int  # items preloaded per adapter
    ops: int  # most calls timed per operation
    seconds: float  # most seconds per operation
    ratio_records: int
    txn_count: int
    txn_big: int
    txn_log_records: int
    ycsb_records: int
    ycsb_seconds: float


FULL = Dose(records=3_000, ops=400, seconds=2.0, ratio_records=2_000, txn_count=100, txn_big=10_000,
            txn_log_records=2_000, ycsb_records=3_000, ycsb_seconds=3.0)
QUICK = Dose(records=500, ops=60, seconds=0.5, ratio_records=500, txn_count=30, txn_big=2_000,
             txn_log_records=200, ycsb_records=500, ycsb_seconds=0.7)


def machine() -> dict[str, Any]:
    uname = platform.uname()
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        usable = os.cpu_count()
    model = ""
    try:
        with open("/proc/cpuinfo") as handle:
            model = next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), "")
    except OSError:
        pass
    return {"uname": f"{uname.system} {uname.release} {uname.machine}", "cpu_model": model,
            "cpu_count": os.cpu_count(), "cpus_usable": usable, "python": platform.python_version(),
            "load_1min": round(os.getloadavg()[0], 2)}


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile of ``values`` (not empty)."""
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, math.ceil(len(ordered) * p / 100) - 1))]


def timed(name: str, calls: Iterator[Callable[[], Any]], dose: Dose, per_call: int = 1) -> dict[str, Any]:
    """Time calls one by one until ``dose.ops`` or ``dose.seconds``; ops/s counts ``per_call``
    operations per call (a batch of 100 items is 100 ops)."""
    latencies: list[float] = []
    errors: dict[str, int] = {}
    deadline = time.perf_counter() + dose.seconds
    for call in calls:
        started = time.perf_counter()
        try:
            call()
        except Exception as exc:  # counted and named in the table, never hidden
            errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
        latencies.append(time.perf_counter() - started)
        if len(latencies) >= dose.ops or time.perf_counter() >= deadline:
            break
    total = sum(latencies)
    return {"operation": name, "calls": len(latencies), "ops_per_s": per_call * len(latencies) / total,
            "p50_ms": percentile(latencies, 50) * 1e3, "p99_ms": percentile(latencies, 99) * 1e3,
            "per_call": per_call, "errors": errors}


def adapter_figures(backend: str, dose: Dose, root: str) -> list[dict[str, Any]]:
    """store, retrieve, search, (vector search | traverse), batch, delete on one adapter."""
    import numpy as np

    folder = tempfile.mkdtemp(prefix=f"{backend}-", dir=root)
    store = growth.open_adapter(backend, folder)
    try:
        items = adapter_ratios.make_items(dose.records, seed=1, prefix="pre")
        for start in range(0, len(items), 1_000):
            store.store_many(items[start:start + 1_000])
        if backend in ("networkx", "kuzu"):  # a sparse graph over the first items: each links to the next two
            linked = min(dose.records, 1_000)
            tx = store.begin_transaction()
            for i in range(linked):
                for step in (1, 2):
                    store.add_relationship(items[i].id, items[(i + step) % linked].id, "NEXT")
            store.prepare_commit(tx)
            store.commit(tx)
        rng = random.Random(3)
        fresh = adapter_ratios.make_items(dose.ops, seed=2, prefix="new")
        stored: list[str] = []

        def store_calls() -> Iterator[Callable[[], Any]]:
            for item in fresh:
                stored.append(item.id)
                yield lambda item=item: store.store(item)

        def ids() -> Iterator[str]:
            while True:
                yield items[rng.randrange(len(items))].id

        def batches() -> Iterator[Callable[[], Any]]:
            for n in range(10**6):
                batch = adapter_ratios.make_items(BATCH, seed=100 + n, prefix=f"b{n}")
                yield lambda batch=batch: store.store_many(batch)

        rows = [timed("store", store_calls(), dose),
                timed("retrieve", (lambda i=i: store.retrieve(i) for i in ids()), dose),
                timed("search", (lambda: store.search({"memory_type": "EPISODIC", "limit": 10})
                                 for _ in iter(int, 1)), dose)]
        if backend in ("faiss", "chroma"):
            vectors = np.random.default_rng(4)
            rows.append(timed("vector search", (lambda q=vectors.normal(size=DIMENSION).tolist():
                                                store.similarity_search(q, 10) for _ in iter(int, 1)), dose))
        if backend in ("networkx", "kuzu"):
            linked_ids = [items[i].id for i in range(min(dose.records, 1_000))]
            rows.append(timed("traverse (depth 2)", (lambda i=rng.choice(linked_ids): store.neighbors(i, depth=2)
                                                     for _ in iter(int, 1)), dose))
        rows.append(timed(f"batch ({BATCH} items)", batches(), dose, per_call=BATCH))
        rows.append(timed("delete", (lambda i=i: store.delete(i) for i in list(stored)), dose))
        for row in rows:
            row["backend"] = backend
        return rows
    finally:
        store.close()
        shutil.rmtree(folder, ignore_errors=True)


def ycsb_run(store: Any, workload: str, records: int, seconds: float, seed: int) -> dict[str, Any]:
    """One in-process YCSB client on ``store`` for ``seconds``: ops/s, p50/p99 ms, errors by type."""
    client = ycsb.Client(store, workload, records, seed=seed, insert_from=records + seed * 10**7)
    hist = ycsb.LogHistogram()
    errors: dict[str, int] = {}
    count = 0
    started = time.perf_counter()
    deadline = started + seconds
    while time.perf_counter() < deadline:
        _name, thunk = client.next()
        t0 = time.perf_counter()
        try:
            thunk()
        except Exception as exc:  # a failed operation counts as done, and is named
            errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
        hist.add((time.perf_counter() - t0) * 1e6)
        count += 1
    elapsed = time.perf_counter() - started
    return {"workload": workload, "ops": count, "ops_per_s": count / elapsed, "p50_ms": hist.percentile(50) / 1e3,
            "p99_ms": hist.percentile(99) / 1e3, "errors": errors}


def ycsb_figures(backend: str, dose: Dose, root: str) -> list[dict[str, Any]]:
    """Workloads A-F in order over one preloaded store, as YCSB's load and run phases go."""
    folder = tempfile.mkdtemp(prefix=f"ycsb-{backend}-", dir=root)
    store = ycsb.open_spec(f"{backend}:{os.path.join(folder, growth.PATHS[backend])}")
    try:
        ycsb.preload(store, dose.ycsb_records)
        return [{"backend": backend, **ycsb_run(store, workload, dose.ycsb_records, dose.ycsb_seconds, n)}
                for n, workload in enumerate("ABCDEF")]
    finally:
        store.close()
        shutil.rmtree(folder, ignore_errors=True)


#: Load under faults on LMDB (workload B): the port-fault wrappers, as ``--port-faults`` gives locust.
PORT_FAULT_CASES = [("none", ""), ("20 % of reads +5 ms (latency)", "retrieve=latency:0.2:0.005"),
                    ("5 % of reads and writes fail (transient)", "retrieve=transient:0.05,store=transient:0.05")]


def fault_figures(dose: Dose, root: str) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """YCSB under faults: port-fault wrappers on LMDB, and a Toxiproxy latency toxic in front of a
    Chroma server (direct against through the proxy), each with the same client and seed."""
    from memsys.testing.port_faults import wrap_store

    rows: list[dict[str, Any]] = []
    failed: dict[str, str] = {}
    folder = tempfile.mkdtemp(prefix="faults-lmdb-", dir=root)
    store = ycsb.open_spec(f"lmdb:{folder}/lmdb")
    try:
        ycsb.preload(store, dose.ycsb_records)
        for label, spec in PORT_FAULT_CASES:
            plan = ycsb.port_fault_plan(spec, seed=11) if spec else None
            target = wrap_store(store, plan) if plan else store
            row = ycsb_run(target, "B", dose.ycsb_records, dose.ycsb_seconds, seed=5)
            rows.append({"store": "lmdb", "fault": label, "spec": spec,
                         "fired": plan.summary()["fired"] if plan else 0, **row})
    finally:
        store.close()
        shutil.rmtree(folder, ignore_errors=True)
    try:
        rows += _toxic_figures(dose, root)
    except Exception as exc:  # no chroma or toxiproxy here: say so in the table's notes
        failed["Toxiproxy latency toxic"] = f"{type(exc).__name__}: {exc}"
    return rows, failed


def _toxic_figures(dose: Dose, root: str) -> list[dict[str, Any]]:
    from memsys.testing.servers import ChromaServer, ToxiproxyServer

    chroma = ChromaServer(os.path.join(root, "chroma-server"))
    toxiproxy = None
    try:
        toxiproxy = ToxiproxyServer(log_dir=root)
        proxy = toxiproxy.client.create_proxy("figures_chroma", chroma.address)
        records = min(dose.ycsb_records, 1_000)  # preloading a server over HTTP is slow; reads are the point
        rows = []
        for label, address, toxic in (("none (direct)", chroma.address, 0), ("through Toxiproxy, no toxic",
                                      proxy.listen, 0), ("Toxiproxy latency toxic 10 ms", proxy.listen, 10)):
            if toxic:
                proxy.add_toxic("latency", name="figures_latency", latency=toxic, jitter=0)
            store = ycsb.open_spec(f"chroma+http://{address}?collection=figures")
            try:
                ycsb.preload(store, records)
                row = ycsb_run(store, "C", records, dose.ycsb_seconds, seed=6)
            finally:
                store.close()
                if toxic:
                    proxy.remove_toxic("figures_latency")
            rows.append({"store": "chroma server", "fault": label, "spec": f"latency {toxic} ms" if toxic else "",
                         "fired": None, **row})
        return rows
    finally:
        if toxiproxy is not None:
            toxiproxy.stop()
        chroma.stop()


def growth_figures(remeasure: bool) -> dict[str, Any] | None:
    path = RESULTS / "growth.json"
    if remeasure:
        rows = growth.run(list(growth.BACKENDS), [1_000, 10_000, 100_000], 40)
        document = {"sizes": [1_000, 10_000, 100_000], "writes": 40, "rows": rows}
        return {**document, "source": "measured in this run",
                "date": datetime.now(timezone.utc).strftime("%Y-%m-%d")}
    if not path.exists():
        return None
    document = json.loads(path.read_text())
    stamp = datetime.fromtimestamp(path.stat().st_mtime, timezone.utc).strftime("%Y-%m-%d")
    return {**document, "source": f"{path.relative_to(RESULTS.parent.parent)} (python -m benchmarks.growth)",
            "date": stamp}


def _cell(value: float, digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value:,.{digits}f}"


def _ms(value: float) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.3f}" if value < 10 else f"{value:.1f}"


def _errors(errors: dict[str, int]) -> str:
    return ", ".join(f"{n} {name}" for name, n in sorted(errors.items()))


def markdown(doc: dict[str, Any]) -> str:
    m = doc["machine"]
    dose = doc["dose"]
    out = [f"# memsys figures, {doc['date']}", "",
           f"Measured {doc['date']} on `{m['uname']}`, {m['cpu_model'] or 'CPU'}: {m['cpu_count']} CPUs "
           f"({m['cpus_usable']} usable), Python {m['python']}, load average {m['load_1min']} at the start and "
           f"{doc['load_end']} at the end; {doc['seconds']:.0f} s in all (`python -m benchmarks.figures"
           f"{' --quick' if doc['quick'] else ''}`). One caller; absolute rates move with the machine's load, ratios "
           "much less.", "",
           f"## Adapters: one call at a time, {dose['records']:,} items preloaded, default durability", "",
           f"Up to {dose['ops']} calls or {dose['seconds']} s per operation; p50 / p99 of single calls in ms; "
           f"batch = store_many of {BATCH} items (ops/s counts items, latency is per call); vs raw = memsys / the "
           f"raw library doing the same durable work (benchmarks.adapter_ratios, {dose['ratio_records']:,} items, "
           "this run; > 1 means memsys is faster).", "",
           "| adapter | operation | ops/s | p50 ms | p99 ms | vs raw |", "|---|---|---:|---:|---:|---:|"]
    ratios = {(r["backend"], r["operation"]): r["ratio"] for r in doc["raw_ratios"]}
    for row in doc["adapters"]:
        op = row["operation"].split(" (")[0]
        raw = ratios.get((row["backend"], RAW_NAMES.get(op, "")))
        if op == "vector search" and row["backend"] == "faiss":
            raw = ratios.get(("faiss", "search_flat"))
        if op == "vector search" and row["backend"] == "chroma":
            raw = ratios.get(("chroma", "search_hnsw"))
        note = f" ({_errors(row['errors'])})" if row["errors"] else ""
        out.append(f"| {row['backend']} | {row['operation']}{note} | {_cell(row['ops_per_s'])} | "
                   f"{_ms(row['p50_ms'])} | {_ms(row['p99_ms'])} | {'-' if raw is None else f'{raw:.2f}'} |")
    out += ["", "## Cross-store transactions (LMDB + DuckDB + Kuzu, this run)", "",
            "| measure | memsys | baseline | ratio |", "|---|---:|---:|---:|"]
    for f in doc["transactions"]:
        if f["target"] == "reported":
            out.append(f"| {f['name']} | {f['value']:.2f} s | - | - |")
        else:
            out.append(f"| {f['name']} | {f['value']:,.3f} | {f['baseline']:,.3f} | {f['ratio']:.2f} |")
    notes = [f["note"] for f in doc["transactions"] if f["note"].startswith("ms per op; raw")]
    if notes:
        out += ["", f"Raw durable writes ({notes[0][len('ms per op; raw: '):]} ms) are the baseline of the first row."]
    g = doc["growth"]
    if g:
        sizes = [str(s) for s in g["sizes"]]
        out += ["", f"## Commit cost against store size ({g['source']}, {g['date']})", "",
                f"Median ms of single-item commits through a MemoryManager transaction, {g['writes']} each.", "",
                "| adapter | commit of | " + " | ".join(f"{int(s):,} items" for s in sizes)
                + f" | {int(sizes[-1]):,} / {int(sizes[0]):,} |", "|---|---|" + "---:|" * (len(sizes) + 1)]
        for row in g["rows"]:
            out.append(f"| {row['backend']} | {row['operation']} | "
                       + " | ".join(_ms(row["ms"].get(s, math.nan)) for s in sizes) + f" | {row['growth']:.2f} |")
    out += ["", f"## YCSB A-F: ops/s of one in-process client ({dose['ycsb_records']:,} records of 10 x 100 bytes, "
            f"{dose['ycsb_seconds']} s a workload, default durability)", "",
            "A 50/50 read/update, B 95/5 read/update, C read only, D 95/5 read/insert latest, E 95/5 scan/insert, "
            "F 50/50 read/read-modify-write; cells are ops/s (p99 ms).", "",
            "| store | A | B | C | D | E | F |", "|---|---:|---:|---:|---:|---:|---:|"]
    for backend in dict.fromkeys(r["backend"] for r in doc["ycsb"]):
        cells = []
        for workload in "ABCDEF":
            row = next((r for r in doc["ycsb"] if r["backend"] == backend and r["workload"] == workload), None)
            if row is None:
                cells.append("-")
                continue
            cells.append(f"{_cell(row['ops_per_s'])} ({_ms(row['p99_ms'])})"
                         + (f", {_errors(row['errors'])}" if row["errors"] else ""))
        out.append(f"| {backend} | " + " | ".join(cells) + " |")
    if doc.get("faults"):
        out += ["", "## Load under faults (one in-process YCSB client, same seed per row)", "",
                "LMDB: workload B through memsys.testing.port_faults wrappers (as `locust ... --port-faults "
                "RULES` runs them); Chroma server: workload C direct, through Toxiproxy, and with a latency toxic "
                "on the proxy (as `--toxiproxy URL --toxiproxy-proxy NAME --toxic-latency-ms MS`).", "",
                "| store | workload | fault | ops/s | p50 ms | p99 ms | failed |", "|---|---|---|---:|---:|---:|---:|"]
        for row in doc["faults"]:
            failed_ops = sum(row["errors"].values())
            out.append(f"| {row['store']} | {row['workload']} | {row['fault']} | {_cell(row['ops_per_s'])} | "
                       f"{_ms(row['p50_ms'])} | {_ms(row['p99_ms'])} | "
                       f"{failed_ops:,} of {row['ops']:,}" + (f" ({_errors(row['errors'])})" if failed_ops else "")
                       + " |")
    failed = doc.get("failed") or {}
    if failed:
        out += ["", "Not measured: " + "; ".join(f"{k}: {v}" for k, v in failed.items())]
    return "\n".join(out) + "\n"


def run(dose: Dose, *, quick: bool, backends: list[str], remeasure_growth: bool, progress: bool = True) -> dict:
    def say(text: str) -> None:
        if progress:
            print(f"[{time.monotonic() - t0:5.0f} s] {text}", file=sys.stderr, flush=True)

    t0 = time.monotonic()
    doc: dict[str, Any] = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "machine": machine(),
                           "quick": quick, "dose": dataclasses.asdict(dose), "adapters": [], "raw_ratios": [],
                           "transactions": [], "growth": None, "ycsb": [], "faults": [], "failed": {}}
    root = tempfile.mkdtemp(prefix="memsys-figures-")
    try:
        for backend in backends:
            say(f"adapter {backend}")
            try:
                doc["adapters"] += adapter_figures(backend, dose, root)
            except Exception as exc:  # one broken adapter must not cost the other tables
                doc["failed"][f"adapter {backend}"] = f"{type(exc).__name__}: {exc}"
        say("ratios to the raw libraries")
        try:
            ratios = adapter_ratios.run(records=dose.ratio_records, singles=max(20, dose.ops // 4),
                                        batch=max(100, dose.ratio_records // 10), repeats=3, dim=DIMENSION,
                                        backends=backends, progress=False)
            doc["raw_ratios"] = [dataclasses.asdict(r) | {"ratio": r.ratio} for r in ratios]
        except Exception as exc:
            doc["failed"]["raw ratios"] = f"{type(exc).__name__}: {exc}"
        say("transactions")
        try:
            figures = transaction_ratios.run(progress=False, count=dose.txn_count, repeats=3, big=dose.txn_big,
                                             small=1_000, per_thread=max(20, dose.txn_count // 2),
                                             log_records=dose.txn_log_records)
            doc["transactions"] = [dataclasses.asdict(f) | {"ratio": f.ratio} for f in figures]
        except Exception as exc:
            doc["failed"]["transactions"] = f"{type(exc).__name__}: {exc}"
        say("growth")
        doc["growth"] = growth_figures(remeasure_growth)
        for backend in backends:
            say(f"YCSB A-F on {backend}")
            try:
                doc["ycsb"] += ycsb_figures(backend, dose, root)
            except Exception as exc:
                doc["failed"][f"ycsb {backend}"] = f"{type(exc).__name__}: {exc}"
        say("load under faults")
        try:
            doc["faults"], not_measured = fault_figures(dose, root)
            doc["failed"].update(not_measured)
        except Exception as exc:
            doc["failed"]["load under faults"] = f"{type(exc).__name__}: {exc}"
    finally:
        shutil.rmtree(root, ignore_errors=True)
    doc["seconds"] = time.monotonic() - t0
    doc["load_end"] = round(os.getloadavg()[0], 2)
    return doc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a small dose: same tables, rougher numbers")
    parser.add_argument("--growth", action="store_true", help="re-measure growth 1k -> 100k instead of reading "
                        "benchmarks/results/growth.json (adds several minutes)")
    parser.add_argument("--backend", action="append", choices=BACKENDS, help="only these adapters (repeatable)")
    parser.add_argument("--out", default=str(RESULTS), help="folder for figures.md and figures.json")
    args = parser.parse_args(argv)
    doc = run(QUICK if args.quick else FULL, quick=args.quick, backends=args.backend or BACKENDS,
              remeasure_growth=args.growth)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "figures.json").write_text(json.dumps(doc, indent=1, default=str))
    table = markdown(doc)
    (out / "figures.md").write_text(table)
    print(table)
    if doc["failed"]:
        print("not measured: " + "; ".join(f"{k}: {v}" for k, v in doc["failed"].items()), file=sys.stderr)
    return 1 if doc["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
