"""`memsys bench gate`: passes HEAD against itself, fails a HEAD made 30 % slower, names the benchmark.

The end-to-end runs check out real worktrees and time real stores in worker processes; they
assert verdicts and exit codes only, never a wall time. The slowed build is the gate's own
switch (MEMSYS_BENCH_SLOWDOWN, honoured by the HEAD worker inside the timed region), so no
production code is touched. The decision logic is also driven with scripted workers, which
makes its every branch deterministic.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from memsys.bench import main, register
from memsys.bench.gate import FULL, QUICK, Gate, GateError, run_gate, select
from memsys.bench.stats import Interval, block_interval, t_quantile, verdict

ROOT = Path(__file__).resolve().parents[2]


def gate(*args: str, env: dict[str, str] | None = None, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k != "MEMSYS_BENCH_SLOWDOWN"}
    environment.update(env or {})
    return subprocess.run([sys.executable, "-m", "memsys.bench", "gate", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, env=environment)


def worktrees() -> str:
    return subprocess.run(["git", "-C", str(ROOT), "worktree", "list"], capture_output=True, text=True).stdout


def test_head_against_itself_passes(tmp_path: Path) -> None:
    report = tmp_path / "aa.json"
    out = io.StringIO()
    code = run_gate("HEAD", head="HEAD", quick=True, only=["lmdb.retrieve,lmdb.store,item.construct"],
                    json_path=str(report), repo=str(ROOT), out=out)
    assert code == 0, out.getvalue()
    assert "no regression beyond +15% outside the noise" in out.getvalue()
    document = json.loads(report.read_text())
    assert document["exit_code"] == 0 and document["regressions"] == []
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert document["base"]["commit"] == document["head"]["commit"] == head
    assert document["base"]["path"] != document["head"]["path"]  # two checkouts, two import paths
    for bench in document["benchmarks"]:
        assert bench["verdict"] in ("ok", "unsettled", "faster"), bench["name"]
        assert bench["blocks"] >= QUICK.min_blocks and bench["cpu"]["low"] <= bench["cpu"]["high"]
        assert len(bench["samples"]) == bench["blocks"]
    assert "memsys-bench-gate" not in worktrees()  # the checkouts are gone


def test_head_made_30_percent_slower_in_one_hot_path_fails_naming_it(tmp_path: Path) -> None:
    report = tmp_path / "slow.json"
    done = gate("--base", "HEAD", "--head", "HEAD", "--quick", "--only", "lmdb.retrieve,item.construct",
                "--json", str(report), env={"MEMSYS_BENCH_SLOWDOWN": "lmdb.retrieve=1.3"})
    assert done.returncode == 1, done.stdout + done.stderr
    assert "HEAD deliberately slowed: lmdb.retrieve=1.3" in done.stdout
    assert "REGRESSION in lmdb.retrieve (regression" in done.stdout
    document = json.loads(report.read_text())
    assert document["regressions"] == ["lmdb.retrieve"]
    verdicts = {b["name"]: b for b in document["benchmarks"]}
    assert verdicts["item.construct"]["verdict"] != "regression"
    assert verdicts["lmdb.retrieve"]["cpu"]["low"] > 1.15


def test_unknown_base_and_unknown_benchmark_are_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["gate", "--base", "no-such-ref-anywhere", "--only", "lmdb.retrieve", "--repo", str(ROOT)]) == 2
    assert "no-such-ref-anywhere" in capsys.readouterr().err
    assert main(["gate", "--base", "HEAD", "--only", "lmdb.nothing"]) == 2
    assert "no benchmark matches ['lmdb.nothing']" in capsys.readouterr().err
    assert main(["gate", "--base", "HEAD", "--slowdown", "lmdb.retrieve=0.5"]) == 2
    assert "FACTOR >= 1" in capsys.readouterr().err
    assert "memsys-bench-gate" not in worktrees()


def test_register_adds_bench_gate_and_report_to_the_memsys_command() -> None:
    parser = argparse.ArgumentParser(prog="memsys")
    register(parser.add_subparsers(dest="command", required=True))
    gate_args = parser.parse_args(["bench", "gate", "--base", "HEAD~1", "--quick", "--json", "g.json"])
    assert (gate_args.base, gate_args.quick, gate_args.threshold, gate_args.json) == ("HEAD~1", True, 0.15, "g.json")
    report_args = parser.parse_args(["bench", "report", "--gate-json", "g.json", "--out", "trend"])
    assert report_args.func is not gate_args.func and report_args.gate_json == ["g.json"]


# --- the decision logic, with scripted workers


class Scripted:
    """A worker answering from a cost model: per-op CPU seconds times seeded noise, or an error."""

    def __init__(self, costs: dict[str, float], seed: int, *, errors: dict[str, str] | None = None,
                 block_noise: float = 0.05, spikes: float = 0.3) -> None:
        self.costs, self.errors = costs, errors or {}
        self.rng = random.Random(seed)
        self.block_noise, self.spikes = block_noise, spikes
        self.effect = 1.0
        self.resets: list[str] = []

    def send(self, request: dict) -> None:
        if request["cmd"] == "reset":
            self.resets.append(request["fixture"])
            self.effect = math.exp(self.rng.gauss(0, self.block_noise))  # fresh stores draw a new effect

    def receive(self) -> dict:
        return {"reset": True}

    def run(self, bench: str, n: int) -> dict:
        if bench in self.errors:
            return {"error": self.errors[bench]}
        spike = 1 + (self.rng.expovariate(1.0) if self.rng.random() < self.spikes else 0.0)  # interference
        cpu = self.costs[bench] * n * self.effect * spike
        return {"cpu": cpu, "wall": cpu * 1.5, "thread": cpu}


def decide(head: Scripted, base: Scripted, names: list[str], **kwargs) -> dict[str, object]:
    out = io.StringIO()
    results = Gate(head, base, QUICK, 0.15, 0.95, out, **kwargs).measure(names)  # type: ignore[arg-type]
    return {r.name: r for r in results}


COSTS = {"lmdb.retrieve": 20e-6, "lmdb.store": 300e-6, "item.construct": 6e-6}


@pytest.mark.parametrize("seed", range(5))
def test_equal_sides_never_regress_and_a_30_percent_slowdown_always_does(seed: int) -> None:
    equal = decide(Scripted(COSTS, seed), Scripted(COSTS, seed + 100), list(COSTS))
    assert all(r.verdict != "regression" for r in equal.values())
    slowed = dict(COSTS, **{"lmdb.retrieve": COSTS["lmdb.retrieve"] * 1.3})
    results = decide(Scripted(slowed, seed), Scripted(COSTS, seed + 100), list(COSTS))
    assert results["lmdb.retrieve"].verdict == "regression"
    assert results["lmdb.retrieve"].interval.low > 1.15
    assert results["lmdb.retrieve"].n_blocks >= QUICK.confirm_blocks  # confirmed, not a lucky first look
    assert results["lmdb.store"].verdict != "regression" and results["item.construct"].verdict != "regression"


def test_every_block_rebuilds_the_stores_on_both_sides() -> None:
    head, base = Scripted(COSTS, 1), Scripted(COSTS, 2)
    results = decide(head, base, ["lmdb.retrieve", "lmdb.store"])
    assert head.resets == base.resets and set(head.resets) == {"lmdb"}
    assert len(head.resets) >= max(r.n_blocks for r in results.values())


def test_errors_on_one_side_are_reported_not_timed() -> None:
    head = Scripted(COSTS, 1, errors={"lmdb.store": "StoreError: boom"})
    base = Scripted(COSTS, 2, errors={"item.construct": "TypeError: no such argument"})
    results = decide(head, base, list(COSTS))
    assert results["lmdb.store"].verdict == "broken on HEAD" and results["lmdb.store"].failed
    assert results["item.construct"].verdict == "skipped" and not results["item.construct"].failed
    assert results["lmdb.retrieve"].verdict in ("ok", "unsettled", "faster")


def test_gating_on_wall_time_uses_the_wall_figures() -> None:
    head, base = Scripted(COSTS, 3), Scripted(COSTS, 4)
    results = decide(head, base, ["lmdb.retrieve"], metric="wall")
    assert results["lmdb.retrieve"].interval is results["lmdb.retrieve"].intervals["wall"]


# --- statistics


def test_t_quantiles_match_the_tables() -> None:
    for df, expected in ((1, 12.706), (2, 4.303), (4, 2.776), (9, 2.262), (30, 2.042)):
        assert t_quantile(0.975, df) == pytest.approx(expected, abs=1e-3)


def test_interval_and_verdict() -> None:
    iv = block_interval([math.log(r) for r in (1.29, 1.30, 1.31, 1.32, 1.28, 1.30)])
    assert 1.25 < iv.low < iv.ratio < iv.high < 1.35 and iv.blocks == 6
    assert verdict(iv, 0.15) == "regression"
    # One block that met a slow spell on one side is trimmed, not allowed to decide.
    spell = block_interval([math.log(r) for r in (1.29, 1.30, 1.31, 1.32, 1.28, 1.30, 2.6, 0.7)])
    assert 1.25 < spell.low and spell.ratio == pytest.approx(1.30, abs=0.01)
    assert verdict(Interval(1.0, 0.9, 1.1, 4, 12), 0.15) == "ok"
    assert verdict(Interval(1.2, 1.1, 1.3, 4, 12), 0.15) == "unsettled"  # straddles: not proven, passes
    assert verdict(Interval(0.5, 0.45, 0.55, 4, 12), 0.15) == "faster"
    assert block_interval([0.1]).high == math.inf  # one block says nothing about its own noise


def test_selection_by_glob() -> None:
    assert select(["lmdb.*"]) == ["lmdb.retrieve", "lmdb.search", "lmdb.store", "lmdb.batch"]
    assert select(["item.construct,manager.commit"]) == ["manager.commit", "item.construct"]
    with pytest.raises(GateError):
        select(["nothing"])
    assert FULL.min_blocks > QUICK.min_blocks


def test_bad_arguments_raise_before_any_checkout() -> None:
    with pytest.raises(GateError, match="threshold"):
        run_gate("HEAD", threshold=0)
    with pytest.raises(GateError, match="metric"):
        run_gate("HEAD", metric="sys")


def test_a_hard_time_limit_stops_the_gate_and_judges_what_it_measured() -> None:
    out = io.StringIO()
    gate = Gate(Scripted(COSTS, 1), Scripted(COSTS, 2), QUICK, 0.15, 0.95, out, max_seconds=0.0)  # type: ignore[arg-type]
    results = gate.measure(list(COSTS))
    assert gate.cut_short and all(r.n_blocks == 0 and r.verdict == "not measured" and not r.failed for r in results)
    assert "stopped at the time limit (--max-seconds); under the minimum 4 blocks: lmdb.retrieve, lmdb.store, " \
        "item.construct" in out.getvalue()


def test_the_minimum_dose_goes_round_the_fixtures_block_by_block() -> None:
    head, base = Scripted(COSTS, 1), Scripted(COSTS, 2)
    decide(head, base, list(COSTS))
    first = head.resets[: 2 * QUICK.min_blocks]
    assert first == ["lmdb", "none"] * QUICK.min_blocks  # a time limit cuts every fixture alike


def test_workers_are_never_traced_by_coverage(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from memsys.bench import gate as gate_module

    seen: dict[str, str] = {}

    class Popen:
        def __init__(self, args, env, **kwargs) -> None:
            seen.update(env)
            raise OSError("not started")  # the environment is all this test wants

    monkeypatch.setattr(gate_module.subprocess, "Popen", Popen)
    monkeypatch.setenv("COV_CORE_SOURCE", "memsys")
    monkeypatch.setenv("COVERAGE_PROCESS_START", "pyproject.toml")
    co = gate_module.Checkout("head", "HEAD", "0" * 40, tmp_path)
    with pytest.raises(OSError):
        gate_module.Worker(co, "", tmp_path)
    assert seen["PYTHONPATH"] == str(tmp_path)
    assert "COV_CORE_SOURCE" not in seen and "COVERAGE_PROCESS_START" not in seen
