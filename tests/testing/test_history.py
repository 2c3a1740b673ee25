from __future__ import annotations

from memsys.testing.history import (
    Op,
    TransactionRecord,
    check_all_or_nothing,
    check_counters,
    check_registers,
    read_ops,
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


def test_the_all_or_nothing_checker_names_the_stores_a_partial_transaction_reached() -> None:
    txs = {"whole": TransactionRecord("whole", {"a": ["1"], "b": ["2"]}, "ok"),
           "none": TransactionRecord("none", {"a": ["3"], "b": ["4"]}, "info"),
           "half": TransactionRecord("half", {"a": ["5", "6"], "b": ["7"]}, "fail")}
    good = check_all_or_nothing(txs, {"a": {"1"}, "b": {"2"}})
    assert good.valid and good.whole == ["whole"] and sorted(good.none) == ["half", "none"]
    bad = check_all_or_nothing(txs, {"a": {"1", "5"}, "b": {"2", "7"}})
    assert not bad.valid and list(bad.partial) == ["half"]
    assert bad.partial["half"] == {"present": {"a": ["5"], "b": ["7"]}, "missing": {"a": ["6"]}}
    assert "half: on a ['5'], b ['7'], missing on a ['6']" in bad.explain()


def test_the_all_or_nothing_checker_reads_writer_tags_and_ignores_overwritten_ids() -> None:
    txs = [TransactionRecord("t1", {"a": ["x"], "b": ["y"]}, "ok"),
           TransactionRecord("t2", {"a": ["x"]}, "ok")]
    # t2 overwrote x on a: t1 is judged by y alone, and is whole.
    good = check_all_or_nothing(txs, {"a": {"x": "t2"}, "b": {"y": "t1"}})
    assert good.valid and good.superseded == 1 and sorted(good.whole) == ["t1", "t2"]
    # y holds a value no transaction of the history wrote: t1 reached a, not b.
    bad = check_all_or_nothing([TransactionRecord("t1", {"a": ["x"], "b": ["y"]})],
                               {"a": {"x": "t1"}, "b": {"y": "someone else"}})
    assert bad.partial["t1"]["missing"] == {"b": ["y"]}


def _w(p, key, version, kind="ok"):
    return [Op(p, "invoke", "write", version, key), Op(p, kind, "write", version, key)]


def test_the_register_check_passes_a_linearizable_history() -> None:
    history = [*_w(1, "k", 1), *_w(1, "k", 2),
               Op(2, "invoke", "read", None, "k"),
               Op(1, "invoke", "write", 3, "k"),   # concurrent with the read: 2 or 3 are both fine
               Op(2, "ok", "read", 3, "k"), Op(1, "ok", "write", 3, "k"),
               Op(3, "invoke", "read", None, "k"), Op(3, "ok", "read", 3, "k"),
               Op(1, "invoke", "delete", 4, "k"), Op(1, "ok", "delete", 4, "k"),
               Op(3, "invoke", "read", None, "k"), Op(3, "ok", "read", None, "k"),
               Op(4, "invoke", "read", None, "other"), Op(4, "ok", "read", None, "other")]
    result = check_registers(history)
    assert result.valid and result.reads == 4 and result.keys == 2, result


def test_the_register_check_finds_stale_resurrected_and_invented_reads() -> None:
    stale = check_registers([*_w(1, "k", 1), *_w(1, "k", 2), Op(2, "invoke", "read", None, "k"),
                             Op(2, "ok", "read", 1, "k")])
    assert not stale.valid and stale.stale == [
        {"key": "k", "process": 2, "read": 1, "index": 5, "invoked": 4, "acknowledged": 2.0, "deleted": False}]
    lost = check_registers([*_w(1, "k", 7), Op(2, "invoke", "read", None, "k"), Op(2, "ok", "read", None, "k")])
    assert lost.stale and lost.stale[0]["read"] is None
    resurrected = check_registers([*_w(1, "k", 1), Op(1, "invoke", "delete", None, "k"),
                                   Op(1, "ok", "delete", None, "k"), Op(2, "invoke", "read", None, "k"),
                                   Op(2, "ok", "read", 1, "k")])
    assert resurrected.stale and resurrected.stale[0]["deleted"]
    invented = check_registers([*_w(1, "k", 1), Op(2, "invoke", "read", None, "k"), Op(2, "ok", "read", 9, "k")])
    assert invented.unexpected and not invented.stale
    # A write whose version only its acknowledgement carries; a failed write proves nothing.
    late = check_registers([Op(1, "invoke", "write", None, "k"), Op(1, "ok", "write", 5, "k"),
                            *_w(1, "k", 8, "fail"), Op(2, "invoke", "read", None, "k"), Op(2, "ok", "read", 5, "k")])
    assert late.valid, late


def test_the_register_check_allows_what_an_unfinished_operation_may_have_done() -> None:
    """A process killed mid-delete (info) may or may not have deleted: absent is not stale then;
    a delete that completed before the acknowledged write was invoked cannot explain it."""
    killed = [*_w(1, "k", 5), Op(1, "invoke", "delete", None, "k"), Op(1, "info", "delete", None, "k"),
              Op(9, "invoke", "read", None, "k"), Op(9, "ok", "read", None, "k")]
    assert check_registers(killed).valid
    early = [Op(1, "invoke", "delete", None, "k"), Op(1, "ok", "delete", None, "k"), *_w(1, "k", 5),
             Op(9, "invoke", "read", None, "k"), Op(9, "ok", "read", None, "k")]
    assert check_registers(early).stale
    # A write concurrent with an acknowledged delete may land after it.
    racing = [*_w(1, "k", 1), Op(2, "invoke", "write", 2, "k"), Op(1, "invoke", "delete", None, "k"),
              Op(1, "ok", "delete", None, "k"), Op(3, "invoke", "read", None, "k"), Op(3, "ok", "read", 2, "k")]
    assert check_registers(racing).valid


def test_register_ops_round_trip_through_history_files(tmp_path) -> None:
    history = HistoryFile(tmp_path / "ops.jsonl")
    for op in [*_w(1, "k", 1), *_w(1, "k", 2), Op(2, "invoke", "read", None, "k"), Op(2, "ok", "read", 1, "k")]:
        history.write({"process": op.process, "type": op.type, "f": op.f, "value": op.value, "key": op.key})
    history.close()
    with open(tmp_path / "ops.jsonl", "a") as f:
        f.write('{"process": 3, "ty')
    assert not check_registers(read_ops([tmp_path / "ops.jsonl"])).valid
