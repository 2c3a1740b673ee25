"""The power-loss experiment of ``memsys chaos run`` and ``memsys verify-adapter``: its phases
(power failures during commits, during log compactions, during recovery) really cut the power
where they say, and its verdict is the history checkers' (set checker and all-or-nothing
checker), so a lost acknowledged write and a partial transaction fail it.
"""

from __future__ import annotations

import contextlib
import os
import re

import pytest

from memsys.adapters.duckdb_store import DuckDBMemoryAdapter
from memsys.adapters.tinydb_store import TinyDBMemoryAdapter
from memsys.testing import chaos
from memsys.testing.history import TransactionRecord
from memsys.testing.plugin import skip_server_unavailable
from memsys.testing.powerloss import PowerLossUnavailable, judge_power_loss, run_power_loss_experiment

pytestmark = pytest.mark.server


def _experiment(folder, phase: str, seed: int, transactions: int = 10, **options) -> dict:
    try:
        return run_power_loss_experiment(folder, seed, transactions, power_failures=2, phase=phase, **options)
    except PowerLossUnavailable as exc:
        skip_server_unavailable(f"power-loss filesystem: {exc}")


def _syncs_nothing(self) -> None:
    """The break: a store's flush returns at once; under a manager (stores unsynced) nothing it
    applied is ever made durable, so once the log compacts, a power failure loses it."""


# -- the judging step -------------------------------------------------------------------------------------

def test_the_verdict_is_the_checkers_lost_partial_and_unexpected() -> None:
    history = {
        "ok-whole": TransactionRecord("ok-whole", {"lmdb": ["a1"], "tinydb": ["a2"]}, "ok"),
        "ok-gone": TransactionRecord("ok-gone", {"lmdb": ["b1"], "duckdb": ["b2"]}, "ok"),
        "half": TransactionRecord("half", {"lmdb": ["c1"], "duckdb": ["c2"]}, "info"),
        "failed": TransactionRecord("failed", {"duckdb": ["d1"], "tinydb": ["d2"]}, "fail"),
        "unknown": TransactionRecord("unknown", {"lmdb": ["e1"], "tinydb": ["e2"]}, "info"),
        "wrong-value": TransactionRecord("wrong-value", {"duckdb": ["f1"], "tinydb": ["f2"]}, "ok"),
    }
    present = {  # id -> the transaction whose value the store holds (None: a value nobody wrote)
        "lmdb": {"a1": "ok-whole", "c1": "half", "e1": "unknown"},
        "duckdb": {"d1": "failed", "f1": "wrong-value", "stray": None},
        "tinydb": {"a2": "ok-whole", "d2": "failed", "e2": "unknown", "f2": None},
    }
    verdict = judge_power_loss(history, present)
    assert not verdict["valid"]
    assert verdict["lost"] == ["ok-gone"]  # acknowledged, on none of its stores
    assert verdict["partial"] == ["half", "wrong-value"]  # on some of its stores only (a wrong value is missing)
    assert verdict["unexpected"] == ["failed", "duckdb:stray"]  # failed yet there; never written yet there
    assert (verdict["attempted"], verdict["acknowledged"], verdict["recovered"]) == (6, 3, 1)
    assert "half: on lmdb ['c1'], missing on duckdb ['c2']" in verdict["explain"]

    whole = {"lmdb": {"a1": "ok-whole", "b1": "ok-gone"}, "duckdb": {"b2": "ok-gone"}, "tinydb": {"a2": "ok-whole"}}
    verdict = judge_power_loss({k: history[k] for k in ("ok-whole", "ok-gone")}, whole)
    assert verdict["valid"] and not (verdict["lost"] or verdict["partial"] or verdict["unexpected"])


# -- a cut from inside the process -----------------------------------------------------------------------------

def test_after_cut_power_nothing_reaches_the_disk_until_restore(plfs) -> None:
    synced, unsynced = os.path.join(plfs.mount_point, "synced"), os.path.join(plfs.mount_point, "unsynced")
    with open(synced, "wb") as f:
        f.write(b"durable")
        f.flush()
        os.fsync(f.fileno())
    late = open(unsynced, "wb")  # noqa: SIM115 - still open when the power goes, as in a dying process
    late.write(b"volatile")
    late.flush()
    plfs.cut_power()
    assert plfs.power_is_off
    with pytest.raises(OSError):  # the dying process goes on, but its writes and syncs fail
        late.write(b" more")
        late.flush()
        os.fsync(late.fileno())
    with pytest.raises(OSError):
        open(os.path.join(plfs.mount_point, "new"), "wb").close()
    with contextlib.suppress(OSError):
        late.close()
    plfs.restore()
    assert not plfs.power_is_off and plfs.power_failures == 1
    with open(synced, "rb") as f:
        assert f.read() == b"durable"
    with open(unsynced, "rb") as f:
        assert f.read() == b""  # created (metadata is durable at once), its data never synced
    assert not os.path.exists(os.path.join(plfs.mount_point, "new"))


# -- the phases cut the power where they say ----------------------------------------------------------------

def test_the_compaction_phase_cuts_the_power_during_and_right_after_log_compactions(tmp_path) -> None:
    result = _experiment(tmp_path, "compaction", seed=3)
    assert result["ok"], result
    assert result["compactions"] >= 3 and result["compactions_cut"] == 2, result
    assert all("compaction" in where for where in result["fault_kinds"] if where != "after close"), result
    assert result["acknowledged"] >= 6 and result["power_failures"] == 3


def test_the_recovery_phase_cuts_the_power_while_recovery_redoes_work(tmp_path) -> None:
    result = _experiment(tmp_path, "recovery", seed=4)
    assert result["ok"], result
    assert result["recoveries_cut"] >= 2 and result["redone"] > 0, result
    assert sum(n for where, n in result["fault_kinds"].items() if where.startswith("during recovery")) \
        == result["recoveries_cut"]
    # Every cut recovery was followed by one that completed: the final judgement saw all of them.
    assert result["recoveries"] > result["recoveries_cut"] + 2


# -- the verdict fails broken stores -------------------------------------------------------------------------

def test_a_store_that_never_syncs_under_a_manager_leaves_partial_transactions(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(TinyDBMemoryAdapter, "flush", _syncs_nothing)
    result = _experiment(tmp_path, "compaction", seed=3)
    assert not result["ok"]
    # TinyDB lost its share of acknowledged transactions the others kept: not all or nothing.
    assert result["partial"] and "missing on" in result["explain"] and "tinydb" in result["explain"], result


def test_stores_that_never_sync_under_a_manager_lose_acknowledged_transactions(tmp_path, monkeypatch) -> None:
    # LMDB stays sound (unsynced all along, its file would be refused, not judged): the transactions
    # on DuckDB and TinyDB alone are then gone whole.
    monkeypatch.setattr(TinyDBMemoryAdapter, "flush", _syncs_nothing)
    monkeypatch.setattr(DuckDBMemoryAdapter, "_flush", _syncs_nothing)
    result = _experiment(tmp_path, "recovery", seed=4)
    assert not result["ok"] and not result["refused"]
    assert result["lost"] and result["explain"].startswith("lost (acknowledged, missing)"), result


# -- what the chaos run reports --------------------------------------------------------------------------------

def test_the_chaos_run_reports_each_phase_with_its_figures_and_fails_on_the_checkers_verdict(tmp_path,
                                                                                             monkeypatch) -> None:
    rows = chaos._power_loss(os.fspath(tmp_path / "good"), 5, 6, 2, False)
    if any(row["status"] == "unavailable" for row in rows):
        skip_server_unavailable(rows[0]["detail"])
    assert [row["name"] for row in rows] == ["power loss: commits", "power loss: compaction", "power loss: recovery"]
    assert all(row["status"] == "ok" and row["attempted"] == 6 for row in rows), rows
    compaction, recovery = rows[1], rows[2]
    # The figures the report shows (its details table, and the text summary) for each phase.
    assert int(re.search(r"log compactions, (\d+) cut by the power", compaction["detail"])[1]) == 2, compaction
    assert any("compaction" in kind for kind in compaction["fault_kinds"])
    assert int(re.search(r"(\d+) recoveries cut by the power", recovery["detail"])[1]) > 0, recovery
    assert any(kind.startswith("power failure during recovery") for kind in recovery["fault_kinds"]), recovery

    monkeypatch.setattr(TinyDBMemoryAdapter, "flush", _syncs_nothing)
    broken = chaos._power_loss(os.fspath(tmp_path / "broken"), 5, 6, 2, False)
    failed = [row for row in broken if row["status"] == "FAILED"]
    assert failed and all(row["partial"] > 0 and "missing on tinydb" in row["detail"] for row in failed), broken
    assert not chaos.Experiment(**failed[0]).ok
