"""`memsys bench report` on synthetic asv results and gate JSON, written here in the tools' formats."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from memsys.bench.report import ReportError, load_asv, run_report

COLUMNS = ["result", "params", "version", "started_at", "duration", "stats_ci_99_a", "stats_ci_99_b",
           "stats_q_25", "stats_q_75", "stats_number", "stats_repeat", "samples", "profile"]
STORE = "bench_memsys.AdapterOperations.time_store"
PEAK = "bench_memsys.Growth.peakmem_preload"


def asv_result(folder: Path, n: int, commit: str, store_lmdb: float, *, noisy: bool = False) -> None:
    """One asv 0.6 results file (format 2) with a parameterised time_ and a peakmem_ benchmark."""
    spread = 0.5 if noisy else 0.02
    values = [store_lmdb, 2e-3]
    results = {
        STORE: [values, [["'lmdb'", "'duckdb'"]], "v1", 1_700_000_000_000 + n, 1.5,
                [v * (1 - spread) for v in values], [v * (1 + spread) for v in values]],
        PEAK: [[50e6 + n * 1e5], [], "v2", 1_700_000_000_000 + n, 0.5],
    }
    data = {"commit_hash": commit, "env_name": "existing-py_usr_bin_python3.11",
            "date": 1_700_000_000_000 + n * 3_600_000,
            "params": {"machine": "ci-box", "python": "3.11"}, "python": "3.11", "requirements": {}, "env_vars": {},
            "result_columns": COLUMNS, "results": results, "durations": {}, "version": 2}
    (folder / f"{commit[:8]}-existing-py_usr_bin_python3.11.json").write_text(json.dumps(data))


@pytest.fixture
def asv_results(tmp_path: Path) -> Path:
    root = tmp_path / "results"
    machine = root / "ci-box"
    machine.mkdir(parents=True)
    (machine / "machine.json").write_text(json.dumps({"machine": "ci-box", "version": 1}))
    (root / "benchmarks.json").write_text(json.dumps({STORE: {"unit": "seconds"}, PEAK: {"unit": "bytes"},
                                                      "version": 2}))
    # lmdb store: steady at 100 us, then commit 5 jumps to 160 us (beyond noise), commit 6 stays there.
    for n, value in enumerate([100e-6, 101e-6, 99e-6, 100e-6, 102e-6, 160e-6, 161e-6]):
        asv_result(machine, n, f"{n:02d}abcdef0123456789", value)
    return root


def test_asv_results_give_one_series_per_parameter_in_commit_order(asv_results: Path) -> None:
    machines = load_asv(asv_results)
    assert list(machines) == ["ci-box"]
    titles = [s.title for s in machines["ci-box"]]
    assert titles == [f"{STORE}('duckdb')", f"{STORE}('lmdb')", PEAK]
    lmdb = machines["ci-box"][1]
    assert [p.label for p in lmdb.points] == [f"{n:02d}abcdef" for n in range(7)]
    assert lmdb.unit == "seconds" and lmdb.points[5].value == pytest.approx(160e-6)


def test_report_flags_the_commit_where_a_figure_moved_and_draws_plots(asv_results: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"
    assert run_report(results=str(asv_results), out=str(out)) == 0
    summary = (out / "README.md").read_text()
    flagged = summary.split("### Moved beyond noise")[1].split("|")[0]
    assert "`05abcdef`" in flagged and "('lmdb')" in flagged and "+57%" in flagged
    assert "duckdb" not in flagged and "peakmem" not in flagged  # flat series are not flagged
    assert "`06abcdef`" not in flagged  # staying at the new level is not a second move
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == ["ci-box__bench_memsys.AdapterOperations.time_store.png",
                    "ci-box__bench_memsys.Growth.peakmem_preload.png"]
    for png in pngs:
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"]({png})" in summary


def test_a_step_inside_overlapping_intervals_is_not_flagged(tmp_path: Path) -> None:
    machine = tmp_path / "results" / "ci-box"
    machine.mkdir(parents=True)
    for n, value in enumerate([100e-6, 100e-6, 130e-6, 100e-6]):
        asv_result(machine, n, f"{n:02d}feedface", value, noisy=True)  # +-50 % intervals
    out = tmp_path / "report"
    run_report(results=str(tmp_path / "results"), out=str(out))
    assert "Nothing moved beyond noise." in (out / "README.md").read_text()


def gate_run(path: Path, day: int, head: str, ratio: float, low: float, high: float, verdict: str) -> Path:
    document = {"tool": "memsys bench gate", "date": f"2025-01-{day:02d}T00:00:00+00:00",
                "machine": {"host": "ci-box"}, "threshold": 0.15, "metric": "cpu",
                "head": {"commit": head, "dirty": False}, "base": {"commit": "0" * 40, "dirty": False},
                "benchmarks": [{"name": "lmdb.retrieve", "verdict": verdict,
                                "cpu": {"ratio": ratio, "low": low, "high": high}},
                               {"name": "lmdb.store", "verdict": "ok",
                                "cpu": {"ratio": 1.0, "low": 0.95, "high": 1.05}}]}
    path.write_text(json.dumps(document))
    return path


def test_gate_json_runs_become_a_trend_with_the_regression_flagged(tmp_path: Path) -> None:
    first = gate_run(tmp_path / "a.json", 1, "a" * 40, 1.01, 0.97, 1.05, "ok")
    second = gate_run(tmp_path / "b.json", 2, "b" * 40, 1.31, 1.27, 1.35, "regression")
    out = tmp_path / "report"
    assert run_report(gate_json=[str(first), str(second)], out=str(out)) == 0
    summary = (out / "README.md").read_text()
    assert "lmdb.retrieve: regression (x1.31, [1.27, 1.35]" in summary
    assert "lmdb.store: " not in summary.split("| benchmark")[0]
    assert (out / "ci-box__lmdb.retrieve.png").is_file() and (out / "ci-box__lmdb.store.png").is_file()


def test_bad_inputs_are_refused_with_exit_status_2(tmp_path: Path) -> None:
    with pytest.raises(ReportError, match="not a folder"):
        load_asv(tmp_path / "missing")
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "x.json").write_text(json.dumps({"version": 1, "results": {}}))
    with pytest.raises(ReportError, match="format version 2"):
        load_asv(tmp_path)
    done = subprocess.run([sys.executable, "-m", "memsys.bench", "report", "--gate-json",
                           str(tmp_path / "m" / "x.json"), "--out", str(tmp_path / "o")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "not a `memsys bench gate --json` file" in done.stderr
