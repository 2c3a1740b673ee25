"""The benchmark harnesses run end to end (tiny sizes): tests check they work, never wall times."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys

import pytest

from benchmarks import adapter_ratios, transaction_ratios


def test_adapter_ratio_harness_measures_every_backend(tmp_path) -> None:
    results = adapter_ratios.run(records=150, singles=5, batch=40, repeats=1, dim=16, progress=False)
    assert {r.backend for r in results} == set(adapter_ratios.BENCHES)
    assert all(r.ours > 0 and r.raw > 0 for r in results)
    table = adapter_ratios.markdown(results)
    assert "| lmdb | retrieve |" in table and "recall@10" in table
    adapter_ratios.plot(results, str(tmp_path / "ratios.png"))
    assert (tmp_path / "ratios.png").stat().st_size > 10_000


def test_transaction_harness_reports_all_four_figures() -> None:
    figures = transaction_ratios.run(progress=False, count=10, repeats=1, big=300, small=100, per_thread=8,
                                     log_records=30)
    assert [f.target for f in figures] == ["<= 1.2", "<= 1.2", ">= 1.5", "reported"]
    assert all(f.value > 0 and f.baseline > 0 for f in figures)
    assert "recovery after a crash, 30 commits" in transaction_ratios.markdown(figures)


def test_locust_drives_memsys_headless_and_gates_on_failures(tmp_path) -> None:
    env = dict(os.environ, MEMSYS_LOCUST_DIR=str(tmp_path / "stores"))
    result = subprocess.run(
        [sys.executable, "-m", "locust", "-f", "benchmarks/locustfile.py", "--workload", "txn", "--headless", "-u", "3", "-r", "3",
         "-t", "3s", "--csv", str(tmp_path / "load"), "--only-summary"],
        capture_output=True, text=True, timeout=120, env=env, cwd=os.path.dirname(os.path.dirname(__file__)))
    assert result.returncode == 0, result.stderr[-2000:]
    stats = (tmp_path / "load_stats.csv").read_text()
    assert "transaction lmdb+duckdb+kuzu" in stats and "retrieve duckdb" in stats


_ids = itertools.count()


@pytest.mark.parametrize("backend", ["lmdb", "duckdb"])
def test_pytest_benchmark_store(benchmark, tmp_path, backend) -> None:
    """For trends: pytest benchmarks/test_benchmark_harness.py --benchmark-only --benchmark-save=NAME,
    then --benchmark-compare --benchmark-compare-fail=min:25% fails on a regression."""
    from memsys.domain.model import MemoryItem, MemoryType
    from memsys.testing.chaos import open_store

    store = open_store(backend, str(tmp_path))
    benchmark.extra_info["backend"] = backend
    benchmark(lambda: store.store(MemoryItem(id=f"b-{next(_ids)}", content="x", memory_type=MemoryType.CODE)))
    store.close()
