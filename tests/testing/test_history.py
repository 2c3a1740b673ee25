from __future__ import annotations

from memsys.testing.history import (
    Op,
    TransactionRecord,
    check_counters,
    check_dirty_reads,
    check_transactions,
    read_transactions,
    HistoryFile,
)


def test_the_transaction_checker_names_every_kind_of_anomaly() -> None:
    txs = {
        "ok-full": TransactionRecord("ok-full", {"a": ["1"], "b": ["2"]}, "ok"),
        "ok-missing": TransactionRecord("ok-missing", {"a": ["3"], "b": ["4"]}, "ok"),
        "ok-half": TransactionRecord("ok-half", {"a": ["5"], "b": ["6"]}, "ok"),
        "info-full": TransactionRecord("info-full", {"a": ["7"]}, "info"),
        "info-absent": TransactionRecord("info-absent", {"a": ["8"]}, "info"),
        "fail-present": TransactionRecord("fail-present", {"b": ["9"]}, "fail"),
        "fail-absent": TransactionRecord("fail-absent", {"b": ["10"]}, "fail"),
        "in-store-half": TransactionRecord("in-store-half", {"a": ["11", "12"]}, "info"),
    }
    present = {"a": {"1", "5", "7", "11", "stray"}, "b": {"2", "9"}}
    result = check_transactions(txs, present)
    assert result.lost == ["ok-missing"]
    assert sorted(result.partial) == ["in-store-half", "ok-half"]
    assert sorted(result.unexpected) == ["a:stray", "fail-present"]
    assert result.recovered == ["info-full"]
    assert not result.valid
    assert result.counts()["acknowledged"] == 3 and result.counts()["attempted"] == 8
    clean = check_transactions({"t": TransactionRecord("t", {"a": ["1"]}, "ok")}, {"a": {"1"}})
    assert clean.valid and clean.present == 1


def test_history_files_survive_a_torn_last_line(tmp_path) -> None:
    history = HistoryFile(tmp_path / "h.jsonl")
    history.write({"type": "invoke", "tx": "t1", "writes": {"a": ["x"]}})
    history.write({"type": "ok", "tx": "t1"})
    history.write({"type": "invoke", "tx": "t2", "writes": {"a": ["y"]}})
    history.close()
    with open(tmp_path / "h.jsonl", "a") as f:
        f.write('{"type": "ok", "t')
    records = read_transactions([tmp_path / "h.jsonl"])
    assert records["t1"].outcome == "ok" and records["t2"].outcome == "info"


def test_counter_checker_finds_lost_updates() -> None:
    history = [Op(1, "ok", "increment", key="x"), Op(2, "ok", "increment", key="x"),
               Op(3, "info", "increment", key="x"), Op(1, "ok", "increment", key="y")]
    assert check_counters(history, {"x": 2, "y": 1})["valid"]
    assert check_counters(history, {"x": 3, "y": 1})["valid"]  # the unknown one happened
    lost = check_counters(history, {"x": 1, "y": 1})
    assert not lost["valid"] and lost["lost_updates"]["x"]["acknowledged"] == 2
    assert not check_counters(history, {"x": 4, "y": 1})["valid"]


def test_dirty_read_checker() -> None:
    history = [Op(1, "fail", "write", value="poison-1"), Op(2, "ok", "write", value="good-1"),
               Op(3, "ok", "read", value="good-1")]
    assert check_dirty_reads(history)["valid"]
    dirty = check_dirty_reads(history + [Op(4, "ok", "read", value="poison-1")])
    assert not dirty["valid"] and dirty["dirty_reads"][0]["value"] == "poison-1"
