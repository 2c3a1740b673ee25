"""The asv suite runs against this checkout: every benchmark of every class once, on tiny stores.

asv itself times them across commits (see the README); this only proves each benchmark's code
works with the memsys it would measure, so a broken benchmark shows up in the test run rather
than as a gap in the trend. Nothing here times anything.
"""

from __future__ import annotations

import inspect
import itertools
from pathlib import Path
from types import ModuleType

import pytest

from benchmarks.asv import _stores, bench_adapters, bench_manager, bench_memory

PREFIXES = ("time_", "peakmem_", "mem_", "track_")


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> str:
    folder = tmp_path_factory.mktemp("asv-cache")
    patch = pytest.MonkeyPatch()
    patch.chdir(folder)
    patch.setattr(_stores, "SIZES", [300])
    patch.setattr(_stores, "RECOVERY_RECORDS", [20])
    try:
        yield _stores.build_stores()
        _stores._close_all()
    finally:
        patch.undo()


def benchmarks(module: ModuleType) -> list[tuple[str, type, str]]:
    found = []
    for name, cls in vars(module).items():
        if inspect.isclass(cls) and not name.startswith("_") and cls.__module__ == module.__name__:
            found += [(name, cls, m) for m in dir(cls) if m.startswith(PREFIXES)]
    return found


def run_all(module: ModuleType, root: str) -> list[str]:
    ran = []
    for name, cls, method in benchmarks(module):
        assert cls.setup_cache is _stores.build_stores, name  # one shared cache: built once per asv run
        declared = getattr(cls, "params", [[]])
        # Store sizes become the tiny size built above; other parameters are used as declared.
        grid = [[300] if all(isinstance(v, int) and v >= 1000 for v in p) else p for p in declared]
        if name == "Recovery":
            grid = [[20]]
        for params in itertools.product(*grid):
            bench = cls()
            if hasattr(bench, "setup"):
                bench.setup(root, *params)
            getattr(bench, method)(root, *params)
            getattr(bench, method)(root, *params) if not hasattr(bench, "setup") else None
            if hasattr(bench, "teardown"):
                bench.teardown(root, *params)
            ran.append(f"{name}.{method}{params}")
    return ran


def test_adapter_benchmarks_run(built: str) -> None:
    ran = run_all(bench_adapters, built)
    for backend in ("LMDB", "DuckDB", "Kuzu", "TinyDB", "NetworkX", "FAISS", "Chroma"):
        assert f"{backend}Reads.time_retrieve(300,)" in ran and f"{backend}Writes.time_delete(300,)" in ran
    assert "FAISSReads.time_vector_search(300,)" in ran and "KuzuReads.time_traverse(300,)" in ran
    # Sizes declared for asv: 100k only where building it fits an asv run.
    assert bench_adapters.LMDBReads.params == [[1_000, 10_000, 100_000]]
    assert bench_adapters.ChromaWrites.params == [[1_000, 10_000]]


def test_manager_benchmarks_run(built: str) -> None:
    ran = run_all(bench_manager, built)
    assert "CrossStoreCommit.time_commit(300,)" in ran and "Recovery.time_recover(20,)" in ran
    assert "Fallback.time_get_with_fallback('circuit_open',)" in ran
    assert "ManagerKuzuWrites.time_store_many_100(300,)" in ran
    circuit = _stores.recall(("fallback", "circuit_open")).breakers["lmdb"].state
    assert circuit.value == "OPEN"  # the benchmark measures what it says


def test_memory_benchmarks_run(built: str) -> None:
    ran = run_all(bench_memory, built)
    assert "LMDBMemory.peakmem_build(300,)" in ran
    assert bench_memory.TinyDBMemory.params == [[10_000]] and bench_memory.LMDBMemory.params == [[10_000, 100_000]]


def test_recovery_redoes_the_commits_left_in_the_log(built: str, tmp_path: Path) -> None:
    bench = bench_manager.Recovery()
    bench.setup(built, 20)
    bench.time_recover(built, 20)
    assert len(bench.manager.last_recovery.redone) == 20
    bench.teardown(built, 20)
