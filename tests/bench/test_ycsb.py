"""YCSB's definitions (benchmarks/ycsb.py): key choice, operation mix, records, scans, histograms."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import pytest

from benchmarks import ycsb


def test_zipfian_is_skewed_like_ycsb() -> None:
    zipf = ycsb.Zipfian(1000)
    rng = random.Random(0)
    draws = Counter(zipf.next(rng) for _ in range(20_000))
    assert draws.most_common(1)[0][0] == 0 and min(draws) >= 0 and max(draws) < 1000
    top10 = sum(draws[r] for r in range(10)) / 20_000
    assert 0.30 < top10 < 0.50  # theta 0.99: H(10) / H(1000) is about 0.39


def test_scrambled_zipfian_spreads_the_hot_keys_and_latest_favours_new_records() -> None:
    keys = ycsb.KeyChooser("zipfian", 1000, seed=1)
    draws = Counter(keys.existing() for _ in range(20_000))
    assert all(0 <= k < 1000 for k in draws)
    hot = [k for k, _ in draws.most_common(10)]
    assert sum(draws[k] for k in hot) / 20_000 > 0.3 and hot != list(range(10))  # skewed, but not by key order
    latest = ycsb.KeyChooser("latest", 1000, seed=2)
    for ordinal in (5000, 5001, 5002):
        latest.note_insert(ordinal)
    recent = Counter(latest.existing() for _ in range(5000))
    assert recent.most_common(1)[0][0] == 5002 and recent[5002] > recent[999] > recent[0]
    assert all(1 <= keys.scan_length() <= ycsb.MAX_SCAN for _ in range(1000))
    with pytest.raises(ValueError):
        ycsb.KeyChooser("pareto", 10, seed=0)


@pytest.mark.parametrize("name", sorted(ycsb.WORKLOADS))
def test_operation_mix_matches_the_core_workloads(name: str) -> None:
    workload = ycsb.WORKLOADS[name]
    rng = random.Random(3)
    drawn = Counter(workload.choose(rng) for _ in range(20_000))
    for op, share in workload.mix:
        assert drawn[op] / 20_000 == pytest.approx(share, abs=0.015)
    assert set(drawn) == {op for op, _ in workload.mix}
    assert workload.distribution == ("latest" if name == "D" else "zipfian")


def test_records_are_ten_fields_of_100_bytes_and_an_update_rewrites_one() -> None:
    item = ycsb.record(42)
    fields = [item.content, *(item.metadata[f"field{i}"] for i in range(1, 10))]
    assert len(fields) == ycsb.FIELDS and all(len(f) == ycsb.FIELD_BYTES for f in fields)
    assert item.id == "user000000000042" and ycsb.record(42) == item  # a pure function of the ordinal
    changed = ycsb.updated(item, random.Random(0))
    after = [changed.content, *(changed.metadata[f"field{i}"] for i in range(1, 10))]
    assert changed.id == item.id and sum(a != b for a, b in zip(fields, after)) == 1
    assert ycsb.created_at(7) < ycsb.created_at(8)


def test_preload_is_idempotent_and_a_scan_is_a_key_range(tmp_path: Path) -> None:
    store = ycsb.open_spec(f"lmdb:{tmp_path}/db?sync=false")
    try:
        assert ycsb.preload(store, 120, batch=50) == 120
        assert ycsb.preload(store, 150, batch=50) == 30  # only what is missing
        found = store.search({"created_after": ycsb.created_at(100), "limit": 7})
        assert [i.id for i in found] == [ycsb.key(n) for n in range(100, 107)]
    finally:
        store.close()


def test_store_specs() -> None:
    assert ycsb.parse_spec("lmdb:/tmp/x?sync=false&map_size=1048576&name=y") == \
        ("lmdb", "/tmp/x", {"sync": False, "map_size": 1048576, "name": "y"})
    assert ycsb.parse_spec("chroma+http://127.0.0.1:8000?collection=ycsb&timeout=2.5") == \
        ("chroma", "", {"collection": "ycsb", "timeout": 2.5, "server": "http://127.0.0.1:8000"})
    for bad in ("lmdb", ":/tmp/x", "lmdb:"):
        with pytest.raises(ValueError, match="BACKEND:PATH"):
            ycsb.parse_spec(bad)


def test_histogram_percentiles_within_a_percent_and_merging_adds_up() -> None:
    values = [random.Random(4).lognormvariate(4, 1) for _ in range(10_000)]
    first, second = ycsb.LogHistogram(), ycsb.LogHistogram()
    for i, v in enumerate(values):
        (first if i % 2 else second).add(v)
    first.merge(second.to_dict())  # as a master merges a worker's report
    exact = sorted(values)
    for p in (50, 95, 99):
        assert first.percentile(p) == pytest.approx(exact[int(len(exact) * p / 100) - 1], rel=0.015)
    assert first.total == 10_000 and ycsb.LogHistogram().percentile(50) != ycsb.LogHistogram().percentile(50)  # NaN


def test_port_fault_rules_parse_strictly() -> None:
    assert ycsb.parse_port_faults("retrieve=latency:0.2:0.005, store=transient:0.05,*=permanent") == [
        {"method": "retrieve", "kind": "latency", "probability": 0.2, "seconds": 0.005},
        {"method": "store", "kind": "transient", "probability": 0.05, "seconds": 0.0},
        {"method": "*", "kind": "permanent", "probability": 1.0, "seconds": 0.0}]
    for bad in ("retrieve", "retrieve=latency:1", "store=transient:0", "store=crash", "store=transient:1:0.1",
                "=transient", "retrieve=latency:x:0.1"):
        with pytest.raises(ValueError, match="METHOD=KIND"):
            ycsb.parse_port_faults(bad)
    plan = ycsb.port_fault_plan("retrieve=transient:1", seed=3)
    assert plan.seed == 3 and "transient" in plan.describe()
