"""``memsys chaos run --deep`` runs the manager machines (memsys.testing.manager_machine) over every
adapter alone and the mixes, and a machine's failure reaches the run's output and report with the
lines that replay it, not only its first line."""

from __future__ import annotations

import json
import os
import re
import shlex
from typing import Any

import pytest

from memsys.adapters import LMDBMemoryAdapter
from memsys.adapters.lmdb_store import Delete
from memsys.testing import chaos, manager_machine
from memsys.testing.chaos_config import build_config
from memsys.testing.profiles import BLOB_ENV, PROFILE_ENV, SEED_ENV, SHRINK_ENV


@pytest.fixture(autouse=True)
def _no_replay_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (BLOB_ENV, SEED_ENV, PROFILE_ENV, SHRINK_ENV):
        monkeypatch.delenv(name, raising=False)


class DeletesNothing(LMDBMemoryAdapter):
    """LMDB whose committed deletes never reach the engine (and report success): a broken store."""

    def _apply(self, ops: Any, durable: bool) -> None:
        super()._apply([op for op in ops if not isinstance(op, Delete)], durable)


class AppliesNothing(LMDBMemoryAdapter):
    """LMDB whose committed writes never reach the engine."""

    def _apply(self, ops: Any, durable: bool) -> None:
        pass


def broken_stores(*backends: str) -> Any:
    def open_stores(folder: str) -> dict[str, Any]:
        return {"lmdb": DeletesNothing(path=os.path.join(folder, "lmdb"), sync=False)}

    return open_stores


def test_only_the_deep_profile_plans_the_manager_machines_over_every_adapter_and_the_mixes() -> None:
    expected = [chaos.machine_step(b) for b in manager_machine.MACHINES]
    expected += [chaos.machine_step(b, "power-loss") for b in manager_machine.POWER_LOSS_MIXES]
    assert len(expected) == 13 and {b[0] for b in manager_machine.ALONE} == set(chaos.SEVEN)
    assert all(set(m) & {"tinydb", "networkx", "faiss", "chroma"} for m in manager_machine.MIXES)
    deep = [p.description for p in chaos.plan_run(build_config(None, seed=3, profile="deep"), "/nonexistent")]
    assert [d for d in deep if " machine (" in d] == expected
    for profile in ("quick", "default"):  # the quick run stays as fast as it was
        plan = chaos.plan_run(build_config(None, seed=3, profile=profile), "/nonexistent")
        assert not [p for p in plan if " machine (" in p.description]


def test_the_manager_machine_runs_its_steps_under_the_deep_profile_and_ticks_each_one() -> None:
    ticks: list[int] = []
    # 1 x 3 at the CI dose is 10 examples of up to 6 steps at the deep one.
    result = chaos.manager_machine_run(("lmdb",), examples=1, steps=3, seed=11, tick=ticks.append)
    assert result.ok, result.detail
    assert result.name == "manager machine (lmdb)" and result.target == "lmdb"
    ran = re.match(r"(\d+) examples \(10 planned\) of up to 6 steps", result.detail)
    assert ran and int(ran.group(1)) >= 10, result.detail  # Hypothesis may start a few it then discards
    assert 10 < result.attempted <= 6 * int(ran.group(1))  # the steps taken, not the checks at each start
    assert sum(ticks) == result.attempted + int(ran.group(1))  # a tick per invariant check: each step, each start
    assert result.faults == sum(result.fault_kinds.values()) > 0, result.fault_kinds  # the port faults it injected


def _deep_run(tmp_path: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
              seed: int, dose: tuple[int, int]) -> tuple[int, dict[str, Any], str]:
    # The deep plan, cut to the LMDB machine at a small dose (the deep profile: 10x examples, 2x steps).
    monkeypatch.setattr(manager_machine, "MACHINES", {("lmdb",): dose})
    config = build_config(None, seed=seed, profile="deep", experiments=["stateful"], workdir=str(tmp_path / "work"))
    status = chaos.run_chaos(config=config, only=["manager machine (lmdb)"])
    with open(tmp_path / "work" / "report.json") as f:
        report = json.load(f)
    return status, report, capsys.readouterr().out


def test_a_deep_run_reports_the_manager_machine_it_ran(tmp_path: Any, monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    status, report, out = _deep_run(tmp_path, monkeypatch, capsys, seed=4, dose=(1, 4))
    assert status == 0, out
    assert "[1/1] manager machine (lmdb): ok" in out  # the progress line of the step
    assert report["planned"] == ["manager machine (lmdb)"]
    [experiment] = report["experiments"]
    assert experiment["status"] == "ok" and experiment["attempted"] > 10


def test_a_failing_machine_fails_the_deep_run_with_the_lines_that_replay_it(
        tmp_path: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(manager_machine, "backend_stores", broken_stores)
    monkeypatch.setenv(SHRINK_ENV, "0")  # the catch, not minutes of shrinking it
    status, report, out = _deep_run(tmp_path, monkeypatch, capsys, seed=4, dose=(2, 10))
    assert status == 1
    [experiment] = report["experiments"]
    assert experiment["status"] == "FAILED" and experiment["unexpected"] == 1
    detail = experiment["detail"]
    assert "store lmdb diverged from the committed history" in detail
    # The steps that led there, not only the first line.
    assert "failing steps:" in detail and "state.start()" in detail and re.search(r"state\.\w*delete\w*\(", detail)
    command = "memsys chaos run --deep --experiments stateful --seed 4 --only 'manager machine (lmdb)'"
    blob = re.search(rf"{BLOB_ENV}=(\S+) {re.escape(command)}", detail)
    assert blob, detail
    assert f"{SEED_ENV}={experiment['seed']} {command}" in detail
    flat = " ".join(out.split())  # the terminal output wraps long lines
    assert " ".join(f"{BLOB_ENV}={blob.group(1)} {command}".split()) in flat
    assert "FAILED manager machine (lmdb)" in flat

    # The blob replays that very example: the same divergence on the first try, even from another seed.
    monkeypatch.setenv(BLOB_ENV, shlex.split(blob.group(1))[0])
    again = chaos.manager_machine_run(("lmdb",), examples=2, steps=10, seed=99, open_stores=broken_stores("lmdb"))
    assert again.status == "FAILED"
    assert again.detail.splitlines()[0] == detail.splitlines()[0]


def test_the_stateful_model_failure_keeps_its_steps_and_replay_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    # The quick path's transaction machine over the seven stores, here over the broken LMDB alone.
    monkeypatch.setattr(chaos, "SEVEN", ("lmdb",))
    monkeypatch.setattr(chaos, "open_store", lambda backend, folder: AppliesNothing(path=os.path.join(folder, "lmdb"),
                                                                                   sync=False))
    monkeypatch.setenv(SHRINK_ENV, "0")
    result = chaos.stateful_model("/nonexistent", 3, 15, seed=2, profile="quick")
    assert result.status == "FAILED", result.detail
    assert "failing steps:" in result.detail and re.search(r"state\.(begin|write|finish)", result.detail)
    assert "memsys chaos run --quick --experiments stateful --seed 2 --only 'stateful model'" in result.detail
    assert f"{BLOB_ENV}=" in result.detail


def test_the_power_loss_machine_runs_on_a_power_loss_file_system(tmp_path: Any) -> None:
    from memsys.testing.plugin import skip_server_unavailable

    result = chaos.power_loss_machine_run(("lmdb", "tinydb"), str(tmp_path / "plfs"), examples=3, steps=6, seed=5,
                                          settings_profile="ci")
    if result.status == "unavailable":
        skip_server_unavailable(result.detail)  # under CI: a failure
    assert result.ok, result.detail
    assert result.name == "power-loss machine (lmdb+tinydb)" and result.attempted > 3
    assert result.fault_kinds.get("power failure", 0) > 0, result.fault_kinds
