"""benchmarks.figures on a tiny dose: every table renders from measured rows, errors are named.

Nothing here checks a figure's value (they are the machine's); only that each section is
measured, counted and written."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from benchmarks import figures

TINY = dataclasses.replace(figures.QUICK, records=60, ops=8, seconds=0.2, ycsb_records=60, ycsb_seconds=0.1)


def test_adapter_and_ycsb_tables_render_with_the_machine_and_the_fault_rows(tmp_path: Path) -> None:
    rows = figures.adapter_figures("lmdb", TINY, str(tmp_path))
    assert [r["operation"] for r in rows] == ["store", "retrieve", "search", f"batch ({figures.BATCH} items)",
                                             "delete"]
    assert all(r["calls"] > 0 and r["p50_ms"] <= r["p99_ms"] and not r["errors"] for r in rows)
    ycsb_rows = figures.ycsb_figures("lmdb", TINY, str(tmp_path))
    assert [r["workload"] for r in ycsb_rows] == list("ABCDEF") and all(r["ops"] > 0 for r in ycsb_rows)
    assert not any(r["errors"] for r in ycsb_rows)  # every read finds its record
    plan = figures.ycsb.port_fault_plan("retrieve=transient:1", seed=1)
    from memsys.testing.port_faults import wrap_store

    store = figures.ycsb.open_spec(f"lmdb:{tmp_path}/faulty")
    try:
        figures.ycsb.preload(store, 20)
        faulty = figures.ycsb_run(wrap_store(store, plan), "C", 20, 0.05, seed=1)
    finally:
        store.close()
    assert faulty["errors"] == {"StoreUnavailableError": faulty["ops"]}  # every read failed, and is counted
    doc = {"date": "2026-01-01 00:00 UTC", "machine": figures.machine(), "quick": True, "seconds": 1.0,
           "load_end": 0.0, "dose": dataclasses.asdict(TINY), "adapters": rows,
           "raw_ratios": [{"backend": "lmdb", "operation": "store", "ratio": 0.5}], "transactions": [],
           "growth": figures.growth_figures(False), "ycsb": ycsb_rows,
           "faults": [{"store": "lmdb", "fault": "all reads fail", "spec": "", "fired": faulty["ops"], **faulty}],
           "failed": {"Toxiproxy latency toxic": "ServerUnavailable: not here"}}
    text = figures.markdown(json.loads(json.dumps(doc)))
    assert f"on `{doc['machine']['uname']}`" in text and f"Python {doc['machine']['python']}" in text
    assert "| lmdb | retrieve | " in text and "| lmdb | delete | " in text
    store_row = next(line for line in text.splitlines() if line.startswith("| lmdb | store | "))
    assert store_row.endswith(" | 0.50 |")  # the ratio to the raw library, from the same run
    assert "| lmdb | C | all reads fail |" in text and "StoreUnavailableError" in text
    assert "Not measured: Toxiproxy latency toxic" in text
