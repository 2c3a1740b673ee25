"""SIGKILL on all seven stores (FAISS, NetworkX and embedded Chroma included): during
cross-store transactions that span every store, and during single-store writes.

A bounded dose for CI (a few kills each); `memsys chaos crash --kills N` is the long run.
"""

from __future__ import annotations

import os

import pytest

from memsys.domain.errors import InvalidInputError
from memsys.testing.crash import (
    BACKENDS,
    judge_single_store,
    open_store,
    run_campaign,
    run_single_store_campaign,
)
from memsys.testing.history import read_ops, read_transactions
from memsys.testing.samples import sample_item


def test_kills_during_transactions_over_all_seven_stores_lose_nothing_and_leave_nothing_partial(tmp_path) -> None:
    assert set(BACKENDS) == {"lmdb", "duckdb", "kuzu", "tinydb", "networkx", "faiss", "chroma"}
    # Two kills at seeded instants, and two at the protocol steps where a partial commit is
    # likeliest: between the first store's apply and the rest, and right after the log sync.
    result = run_campaign(kills=4, seed=8, workdir=str(tmp_path), transactions=40, progress=False,
                          steps=("after_first_apply", "after_log_sync"))
    summary = result.summary()
    assert result.kills == 4 and result.valid, result.problems()
    assert summary["backends"] == list(BACKENDS)
    assert result.per_step == {"random instant": 2, "after_first_apply": 1, "after_log_sync": 1}
    records = read_transactions(sorted(str(p) for p in tmp_path.glob("history-*.jsonl")))
    spanning = [tx for tx in records.values() if set(tx.writes) == set(BACKENDS) and tx.outcome == "ok"]
    assert spanning, "no acknowledged transaction spanned every store"
    assert summary["acknowledged"] > 0 and result.atomicity.whole


def test_kills_during_single_store_writes_on_all_seven_stores_lose_nothing(tmp_path) -> None:
    workdir = str(tmp_path)
    result = run_single_store_campaign(kills=2, seed=5, workdir=workdir, operations=300, progress=False)
    assert result.kills == 2 and result.valid, result.problems()
    records = read_transactions(sorted(str(p) for p in tmp_path.glob("single-*.jsonl")))
    acknowledged = {store for tx in records.values() if tx.outcome == "ok" for store in tx.writes}
    assert acknowledged == set(BACKENDS), "every store must have acknowledged writes before a kill"
    assert result.registers.reads > 0

    # The same judge must catch a store that loses an acknowledged write, and one that serves an
    # older version of a register after a newer one was acknowledged.
    faiss_ok = next(tx for tx in records.values() if tx.outcome == "ok" and "faiss" in tx.writes)
    ops = read_ops(sorted(str(p) for p in tmp_path.glob("single-tinydb-*.jsonl")))
    versions: dict[str, list[int]] = {}
    for op in ops:
        if op.f == "write" and op.type == "ok":
            versions.setdefault(op.key, []).append(op.value)
    key, acked = next((k, v) for k, v in sorted(versions.items()) if len(v) >= 2)
    faiss = open_store("faiss", workdir, managed=False)
    tinydb = open_store("tinydb", workdir, managed=False)
    try:
        assert faiss.delete(faiss_ok.writes["faiss"][0])
        tinydb.store(sample_item(0).replace(id=key.split("/", 1)[1], version=acked[0]))
    finally:
        faiss.close()
        tinydb.close()
    check, _, registers, _ = judge_single_store(workdir)
    assert check.lost == [faiss_ok.id]
    assert [(s["key"], s["read"]) for s in registers.stale] == [(key, acked[0])], registers
    assert os.path.exists(tmp_path / "crash-single-report.json")


def test_bad_campaign_arguments_are_refused_before_anything_runs(tmp_path) -> None:
    with pytest.raises(InvalidInputError, match="unknown crash backends"):
        run_campaign(kills=1, workdir=str(tmp_path / "a"), backends=("lmdb", "mongo"), progress=False)
    with pytest.raises(InvalidInputError, match="kills"):
        run_single_store_campaign(kills=-1, workdir=str(tmp_path / "b"), progress=False)
    with pytest.raises(InvalidInputError, match="unknown crash steps"):
        run_campaign(kills=1, workdir=str(tmp_path / "c"), steps=("after_lunch",), progress=False)
    assert not any(tmp_path.iterdir())
