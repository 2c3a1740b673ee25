"""What anti-entropy by digests costs against reading both stores in full, in the same run.

    python -m benchmarks.sync_digest                     # 100k items per store, 10 differ
    python -m benchmarks.sync_digest --quick             # 10k items, for a look or a smoke test
    python -m benchmarks.sync_digest --backend duckdb    # both stores DuckDB (default LMDB)

Two stores of N items each, equal but for ``--drift`` ids (updated in B, deleted from B, only
in B) written through the manager. Then, in the same process:

* full read: what a comparison without digests does: read both stores in full and compare
  every id (``iter_items`` on both, canonical bytes compared);
* digest diff: ``SyncManager.diff`` with digest indexes kept current from the commits: compare
  the range digests, read only the ids in differing ranges from both stores, confirm.

Reported (CPU seconds, so a busy machine does not skew the ratio): median of each, their ratio (full / digest), items read by each, and the
one-time cost of building the two indexes (a scan of each store, paid when a SyncManager first
compares them; afterwards each write updates them by one hash). Both methods must find exactly
the same ids, or the run fails.
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

from memsys import MemoryItem, MemoryManager, MemoryType
from memsys.application.digests import DigestIndex, canonical
from memsys.application.sync import SyncManager


def make_item(i: int, version: int = 1, content: str | None = None) -> MemoryItem:
    return MemoryItem(id=f"doc-{i:07d}", content=content or f"note {i}: the quick brown fox #{i % 97}",
                      memory_type=MemoryType.KNOWLEDGE, metadata={"n": i, "shard": i % 16}, version=version)


def open_store(backend: str, path: str) -> Any:
    if backend == "lmdb":
        from memsys.adapters.lmdb_store import LMDBMemoryAdapter

        return LMDBMemoryAdapter(path=path, sync=False, map_size=1 << 30)
    from memsys.adapters.duckdb_store import DuckDBMemoryAdapter

    return DuckDBMemoryAdapter(path=path + ".duckdb", sync=False)


def full_read_diff(manager: MemoryManager, a: str, b: str) -> tuple[set[str], int]:
    """The comparison without digests: both stores read in full, every id compared."""
    ours = {i.id: canonical(i) for i in manager.adapters[a].iter_items()}
    theirs = {i.id: canonical(i) for i in manager.adapters[b].iter_items()}
    differ = {i for i in ours.keys() | theirs.keys() if ours.get(i) != theirs.get(i)}
    return differ, len(ours) + len(theirs)


def timed(fn: Any, repeat: int) -> tuple[float, Any]:
    """Median CPU seconds of ``repeat`` runs (CPU time: the figure holds on a busy machine)."""
    runs, result = [], None
    for _ in range(repeat):
        started = time.process_time()
        result = fn()
        runs.append(time.process_time() - started)
    return statistics.median(runs), result


def run(items: int, drift: int, backend: str, workdir: str, repeat: int) -> dict[str, Any]:
    manager = MemoryManager({"a": open_store(backend, os.path.join(workdir, "a")),
                             "b": open_store(backend, os.path.join(workdir, "b"))},
                            transaction_log=os.path.join(workdir, "txlog"))
    try:
        batch = 5000
        started = time.process_time()
        for start in range(0, items, batch):
            chunk = [make_item(i) for i in range(start, min(items, start + batch))]
            manager.write_versions("a", chunk)
            manager.write_versions("b", chunk)
        load_s = time.process_time() - started
        sync = SyncManager(manager)
        # What keeping an index current costs a write: one entry hash, against the write itself.
        sample = [make_item(i, version=3) for i in range(batch)]
        upkeep_s, _ = timed(lambda: DigestIndex(1024).put_many(sample), 3)
        started = time.process_time()
        sync.digest_index("a")
        sync.digest_index("b")
        build_s = time.process_time() - started
        # The drift, through the manager (so the indexes follow it): a third each of updated in B,
        # deleted from B, only in B.
        step = max(1, items // (drift + 1))
        picked = [step * (k + 1) for k in range(drift)]
        cut = drift // 3 + drift % 3
        updated, deleted = picked[:cut], picked[cut: cut + drift // 3]
        added = list(range(items, items + drift - len(updated) - len(deleted)))
        manager.write_versions("b", [make_item(i, version=2, content="changed in b") for i in updated])
        for i in deleted:
            manager.adapters["b"].delete(f"doc-{i:07d}")
        manager.write_versions("b", [make_item(i) for i in added])
        expected = {f"doc-{i:07d}" for i in updated + deleted + added}

        full_s, (full_ids, full_read) = timed(lambda: full_read_diff(manager, "a", "b"), max(1, repeat // 3))
        digest_s, report = timed(lambda: sync.diff("a", "b"), repeat)
        digest_ids = set(report.missing + report.stale + report.newer_in_target + report.conflicts + report.extra)
        if full_ids != expected or digest_ids != expected:
            raise SystemExit(f"the methods disagree: expected {sorted(expected)}, full read {sorted(full_ids)}, "
                             f"digests {sorted(digest_ids)}")
        return {
            "backend": backend, "items_per_store": items, "differing_ids": len(expected),
            "load_seconds": round(load_s, 3), "index_build_seconds": round(build_s, 4),
            "index_upkeep_us_per_write": round(upkeep_s / batch * 1e6, 2),
            "write_us_per_item": round(load_s / (2 * items) * 1e6, 2),
            "full_read_seconds": round(full_s, 5), "full_read_items": full_read,
            "digest_diff_seconds": round(digest_s, 6), "digest_items_read": report.items_read,
            "digest_buckets": report.buckets, "digest_differing_buckets": report.differing_buckets,
            "ratio_full_over_digest": round(full_s / digest_s, 1),
            "items_read_ratio": round(full_read / max(1, report.items_read), 1),
        }
    finally:
        manager.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=None, help="items per store (default 100000; --quick 10000)")
    parser.add_argument("--drift", type=int, default=10, help="ids that differ (default 10)")
    parser.add_argument("--backend", choices=("lmdb", "duckdb"), default="lmdb")
    parser.add_argument("--repeat", type=int, default=15, help="timed runs of the digest diff (median)")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", default=None, help="also write the result to this file")
    args = parser.parse_args(argv)
    items = args.items or (10_000 if args.quick else 100_000)
    if items < 1 or not 1 <= args.drift <= items // 2:
        parser.error("need items >= 1 and 1 <= drift <= items / 2")
    workdir = tempfile.mkdtemp(prefix="memsys-sync-digest-")
    try:
        result = run(items, args.drift, args.backend, workdir, args.repeat)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"{result['items_per_store']} items per store on {result['backend']}, {result['differing_ids']} differ")
    print(f"  full read of both:   {result['full_read_seconds']:.4f} s, {result['full_read_items']} items read")
    print(f"  digest diff:         {result['digest_diff_seconds']:.6f} s, {result['digest_items_read']} items read "
          f"({result['digest_differing_buckets']} of {result['digest_buckets']} ranges differ)")
    print(f"  ratio (full/digest): {result['ratio_full_over_digest']}x time, {result['items_read_ratio']}x items")
    print(f"  one-time index build (scan of both stores): {result['index_build_seconds']:.3f} s")
    print(f"  index upkeep: {result['index_upkeep_us_per_write']} us per write "
          f"(a batched write costs {result['write_us_per_item']} us per item)")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
