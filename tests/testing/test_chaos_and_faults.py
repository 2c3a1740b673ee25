from __future__ import annotations

import json

import pytest

from memsys import InvalidInputError, StoreError, StoreUnavailableError
from memsys.adapters.lmdb_store import LMDBMemoryAdapter
from memsys.testing import chaos, sample_item
from memsys.testing.faults import FaultInjector


def test_fault_injector_is_seeded_counts_and_heals(tmp_path) -> None:
    outcomes = []
    for _ in range(2):
        store = LMDBMemoryAdapter(path=tmp_path / f"s{len(outcomes)}")
        faults = FaultInjector(store, seed=5).fail("apply", probability=0.5)
        run = []
        for i in range(20):
            try:
                store.store(sample_item(i))
                run.append(True)
            except StoreUnavailableError as exc:
                assert "injected fault" in str(exc)
                run.append(False)
        outcomes.append(run)
        assert faults.injected["apply:StoreUnavailableError"] == run.count(False) > 0
        faults.heal()
        store.store(sample_item(99))
        faults.fail("retrieve", error=StoreError, times=1).delay("search", 0.001, times=1)
        with pytest.raises(StoreError):
            store.retrieve("item-00099")
        assert store.retrieve("item-00099") is not None
        store.search({})
        assert faults.injected["search:delay"] == 1
        faults.remove()
        store.close()
    assert outcomes[0] == outcomes[1], "the same seed must inject the same faults"
    with pytest.raises(InvalidInputError):
        FaultInjector(LMDBMemoryAdapter(path=tmp_path / "x"), seed=1).fail("explode")


def test_fault_injection_experiment_loses_nothing(tmp_path) -> None:
    result = chaos.fault_injection("duckdb", str(tmp_path / "d"), seed=3, transactions=20)
    assert result.ok and result.faults > 0 and result.acknowledged > 0, result


def test_a_recovery_that_does_not_redo_is_caught(tmp_path, monkeypatch) -> None:
    import memsys.application.transactions as transactions

    monkeypatch.setattr(transactions.Coordinator, "_redo", lambda self, name, commits: None)
    result = chaos.fault_injection("lmdb", str(tmp_path / "l"), seed=3, transactions=20)
    assert not result.ok and (result.lost or result.partial), result


def test_the_main_job_runs_every_experiment_and_saves_a_report(tmp_path, toxiproxy) -> None:
    # The real-fault groups run in tests/testing/test_real_faults.py, one test each, at a tiny dose.
    # The whole network matrix runs in chaos/test_chroma_network_faults.py; two of its faults here.
    from memsys.testing.chaos_config import build_config

    config = build_config({"network": {"faults": ["latency", "down"]}}, seed=1, profile="quick",
                          workdir=str(tmp_path))
    status = chaos.run_chaos(config=config, only=["fault injection", "crash", "stateful", "network"])
    report = json.loads((tmp_path / "report.json").read_text())
    names = {e["name"] for e in report["experiments"]}
    assert {"fault injection", "crash and recovery (SIGKILL)", "single-store writes killed (SIGKILL)",
            "stateful model with simulated crashes"} <= names
    assert any(n.startswith("network: ") for n in names), names
    statuses = {e["target"]: e["status"] for e in report["experiments"]}
    assert all(s == "ok" for s in statuses.values()), statuses
    assert status == 0 and report["totals"]["lost"] == 0 and report["totals"]["faults"] > 20
