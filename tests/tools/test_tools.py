"""memsys inspect / diff / repair / recover on real stores (LMDB, DuckDB, TinyDB, one Kuzu case)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from memsys import MemoryManager
from memsys.adapters.duckdb_store import DuckDBMemoryAdapter
from memsys.adapters.lmdb_store import LMDBMemoryAdapter
from memsys.adapters.tinydb_store import TinyDBMemoryAdapter
from memsys.application.txlog import CoordinatorLog
from memsys.testing import sample_item
from memsys.testing.crash import SimulatedCrash, abandon, crash_at
from memsys.tools import digest_diff, main


def run(capsys, *argv: str) -> tuple[int, object, str]:
    """Run a tool with --json; (exit status, parsed stdout, stderr)."""
    code = main([*argv, "--json"])
    out, err = capsys.readouterr()
    return code, (json.loads(out) if out.strip() else None), err


def run_text(capsys, *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out + err


def fill(store, items) -> None:
    for item in items:
        store.store(item)
    store.close()


def drifted_pair(tmp_path: Path, kind_b: str = "duckdb") -> tuple[str, str]:
    """A (LMDB) and B (DuckDB or Kuzu): 40 equal items, then one of each kind of drift."""
    base = [sample_item(i, version=3) for i in range(40)]
    a_items = base + [sample_item(100, version=2),                                  # only in A
                      sample_item(101, version=7, content="a is newer"),            # newer in A
                      sample_item(102, version=4, content="b is newer"),            # newer in B
                      sample_item(103, version=5, content="a side")]                # conflicting
    b_items = base + [sample_item(200, version=9),                                  # only in B
                      sample_item(101, version=6, content="b is older"),
                      sample_item(102, version=8, content="b is newer"),
                      sample_item(103, version=5, content="b side").replace(
                          updated_at=sample_item(103).updated_at.replace(year=2031))]
    spec_a = f"lmdb:{tmp_path / 'a.lmdb'}?sync=false"
    if kind_b == "kuzu":
        spec_b = f"kuzu:{tmp_path / 'b.kuzu'}?buffer_pool_size=64MiB"
        from memsys.adapters.kuzu_store import KuzuMemoryAdapter
        store_b = KuzuMemoryAdapter(path=tmp_path / "b.kuzu", buffer_pool_size=64 << 20)
    else:
        spec_b = f"duckdb:{tmp_path / 'b.duckdb'}?sync=false"
        store_b = DuckDBMemoryAdapter(path=tmp_path / "b.duckdb", sync=False)
    fill(LMDBMemoryAdapter(path=tmp_path / "a.lmdb", sync=False), a_items)
    fill(store_b, b_items)
    return spec_a, spec_b


EXPECTED = {"only_a": ["item-00100"], "only_b": ["item-00200"], "newer_a": ["item-00101"],
            "newer_b": ["item-00102"], "conflicting": ["item-00103"]}


def files(root: Path) -> dict[str, str]:
    """sha256 of every file under root but memsys' lock files (created by opening, holding nothing)."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and not p.name.endswith(".memsys-lock")}


# ---------------------------------------------------------------------------------------- diff


def test_diff_reports_exactly_the_drift_and_exits_1(tmp_path, capsys) -> None:
    spec_a, spec_b = drifted_pair(tmp_path)
    code, report, _ = run(capsys, "diff", spec_a, spec_b)
    assert code == 1 and not report["equal"]
    assert {k: report[k] for k in EXPECTED} == EXPECTED
    assert report["versions"] == {"item-00100": [2, None], "item-00101": [7, 6], "item-00102": [4, 8],
                                  "item-00103": [5, 5], "item-00200": [None, 9]}
    assert (report["items_a"], report["items_b"]) == (44, 44)
    # Only the buckets holding a differing id were compared item by item.
    assert report["differing_buckets"] == 5 and report["compared_items"] < 20
    code, text = run_text(capsys, "diff", spec_a, spec_b)
    assert code == 1 and "conflicting (same version)" in text and "item-00200" in text


def test_digest_diff_finds_the_same_ids_whatever_the_bucket_count(tmp_path) -> None:
    spec_a, spec_b = drifted_pair(tmp_path)
    from memsys.specs import parse_spec

    a, b = parse_spec(spec_a).open(), parse_spec(spec_b).open()
    try:
        reports = [digest_diff(a, b, buckets=n) for n in (1, 7, 256, 4096)]
    finally:
        a.close()
        b.close()
    assert all(r.versions == reports[0].versions for r in reports)
    assert reports[0].compared_items == 88 and reports[-1].compared_items < 20  # one bucket: everything


def test_diff_of_equal_stores_exits_0(tmp_path, capsys) -> None:
    items = [sample_item(i, version=2) for i in range(10)]
    fill(LMDBMemoryAdapter(path=tmp_path / "a", sync=False), items)
    fill(TinyDBMemoryAdapter(path=tmp_path / "b.json", sync=False), items)
    code, report, _ = run(capsys, "diff", f"lmdb:{tmp_path / 'a'}", f"tinydb:{tmp_path / 'b.json'}")
    assert code == 0 and report["equal"] and report["differing_buckets"] == 0


def test_diff_refuses_a_missing_store_a_bad_spec_and_the_same_store_twice(tmp_path, capsys) -> None:
    fill(LMDBMemoryAdapter(path=tmp_path / "a", sync=False), [sample_item(1)])
    code, _, err = run(capsys, "diff", f"lmdb:{tmp_path / 'a'}", f"duckdb:{tmp_path / 'typo.duckdb'}")
    assert code == 2 and "no store at" in err and not (tmp_path / "typo.duckdb").exists()
    code, _, err = run(capsys, "diff", f"lmdb:{tmp_path / 'a'}", "lmbd:/x")
    assert code == 2 and "unknown backend 'lmbd'" in err and err.count("\n") == 1
    code, _, err = run(capsys, "diff", f"lmdb:{tmp_path / 'a'}", f"lmdb:{tmp_path / 'a'}?sync=false")
    assert code == 2 and "the same store" in err


# ---------------------------------------------------------------------------------------- repair


def test_a_dry_run_reports_every_change_and_leaves_the_files_byte_identical(tmp_path, capsys) -> None:
    spec_a, spec_b = drifted_pair(tmp_path)
    before = files(tmp_path)
    code, result, _ = run(capsys, "repair", spec_a, spec_b, "--dry-run")
    assert code == 1 and result["dry_run"] and not result["applied"]
    changes = {(c["store"], c["action"], c["id"], c["from_version"], c["to_version"]) for c in result["changes"]}
    assert changes == {("b", "copy", "item-00100", None, 2), ("b", "copy", "item-00101", 6, 7),
                       ("a", "copy", "item-00102", 4, 8), ("a", "copy", "item-00200", None, 9),
                       ("a", "copy", "item-00103", 5, 5)}  # B's conflicting item has the later updated_at
    assert files(tmp_path) == before
    code, text = run_text(capsys, "repair", spec_a, spec_b, "--dry-run")
    assert code == 1 and "dry run: nothing changed" in text and "5 changes pending" in text
    assert files(tmp_path) == before


def test_repair_makes_diff_report_equal_and_keeps_versions(tmp_path, capsys) -> None:
    spec_a, spec_b = drifted_pair(tmp_path)
    code, result, _ = run(capsys, "repair", spec_a, spec_b)
    assert code == 0 and result["applied"] and result["after"]["equal"]
    assert not result["unplanned"] and not result["not_applied"] and len(result["changes"]) == 5
    code, report, _ = run(capsys, "diff", spec_a, spec_b)
    assert code == 0 and report["equal"]
    b = DuckDBMemoryAdapter(path=tmp_path / "b.duckdb")
    try:
        assert (b.retrieve("item-00101").version, b.retrieve("item-00101").content) == (7, "a is newer")
        assert b.retrieve("item-00100").version == 2 and b.count() == 45
        assert b.retrieve("item-00103").content == "b side"
    finally:
        b.close()
    code, text = run_text(capsys, "repair", spec_a, spec_b)
    assert code == 0 and "nothing to repair" in text


def test_policy_a_with_delete_extra_makes_b_a_copy_of_a(tmp_path, capsys) -> None:
    spec_a, spec_b = drifted_pair(tmp_path)
    code, result, _ = run(capsys, "repair", spec_a, spec_b, "--policy", "a", "--delete-extra")
    assert code == 0, result
    assert {(c["store"], c["action"], c["id"]) for c in result["changes"]} == {
        ("b", "copy", "item-00100"), ("b", "copy", "item-00101"), ("b", "copy", "item-00102"),
        ("b", "copy", "item-00103"), ("b", "delete", "item-00200")}
    code, report, _ = run(capsys, "diff", spec_a, spec_b)
    assert code == 0 and report["equal"]
    a = LMDBMemoryAdapter(path=tmp_path / "a.lmdb")
    try:
        assert a.retrieve("item-00102").version == 4 and a.retrieve("item-00200") is None  # A untouched
    finally:
        a.close()


def test_policy_b_without_delete_extra_keeps_what_only_a_holds(tmp_path, capsys) -> None:
    spec_a, spec_b = drifted_pair(tmp_path)
    code, result, _ = run(capsys, "repair", spec_a, spec_b, "--policy", "b")
    assert code == 0 and result["kept"] == ["item-00100"]
    assert result["after"]["only_a"] == ["item-00100"] and len(result["after"]["versions"]) == 1


def test_delete_extra_needs_a_source_of_truth(tmp_path, capsys) -> None:
    spec_a, spec_b = drifted_pair(tmp_path)
    before = files(tmp_path)
    code, _, err = run(capsys, "repair", spec_a, spec_b, "--delete-extra")
    assert code == 2 and "--policy a or b" in err and files(tmp_path) == before


def test_diff_and_repair_between_lmdb_and_kuzu(tmp_path, capsys) -> None:
    spec_a, spec_b = drifted_pair(tmp_path, kind_b="kuzu")
    code, report, _ = run(capsys, "diff", spec_a, spec_b)
    assert code == 1 and {k: report[k] for k in EXPECTED} == EXPECTED
    code, result, _ = run(capsys, "repair", spec_a, spec_b)
    assert code == 0 and result["after"]["equal"]


# ---------------------------------------------------------------------------------------- inspect


def test_inspect_a_healthy_store(tmp_path, capsys) -> None:
    fill(TinyDBMemoryAdapter(path=tmp_path / "items.json", sync=False),
         [sample_item(i, version=i + 1) for i in range(12)])
    code, report, _ = run(capsys, "inspect", f"tinydb:{tmp_path / 'items.json'}", "--sample", "3")
    assert code == 0 and report["healthy"] and report["error"] is None
    assert report["count"] == 12 and [s["id"] for s in report["sample"]] == ["item-00000", "item-00001", "item-00002"]
    assert report["sample"][1]["version"] == 2 and report["sample"][0]["bytes"] > 0
    assert "transactions" in report["capabilities"] and report["on_disk_bytes"] > 0
    code, text = run_text(capsys, "inspect", f"tinydb:{tmp_path / 'items.json'}")
    assert code == 0 and "healthy" in text and "item-00004" in text


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_inspect_a_damaged_store_reports_it_unhealthy(tmp_path, capsys, damage) -> None:
    path = tmp_path / "items.json"
    fill(TinyDBMemoryAdapter(path=path), [sample_item(i) for i in range(5)])
    data = bytearray(path.read_bytes())
    if damage == "flip":
        for offset in range(60, min(len(data), 90)):
            data[offset] ^= 0xFF
        path.write_bytes(bytes(data))
    else:
        os.truncate(path, len(data) // 2)
    damaged = path.read_bytes()
    code, report, _ = run(capsys, "inspect", f"tinydb:{path}")
    assert code == 1 and not report["healthy"] and report["error"].startswith("CorruptStoreError: ")
    assert str(path) in report["error"] and path.read_bytes() == damaged  # reported, never rewritten
    code, text = run_text(capsys, "inspect", f"tinydb:{path}")
    assert code == 1 and "UNHEALTHY" in text and "CorruptStoreError" in text


def test_inspect_a_locked_or_missing_store(tmp_path, capsys) -> None:
    holder = DuckDBMemoryAdapter(path=tmp_path / "items.duckdb")
    try:
        code, report, _ = run(capsys, "inspect", f"duckdb:{tmp_path / 'items.duckdb'}")
        assert code == 1 and report["error"].startswith("StoreLockedError: ")
    finally:
        holder.close()
    code, report, _ = run(capsys, "inspect", f"duckdb:{tmp_path / 'items.duckdb'}")
    assert code == 0 and report["count"] == 0
    code, report, _ = run(capsys, "inspect", f"lmdb:{tmp_path / 'nothing'}")
    assert code == 1 and "no store at" in report["error"] and not (tmp_path / "nothing").exists()


# ---------------------------------------------------------------------------------------- recover


def crashed(tmp_path: Path) -> list[str]:
    """A manager that committed item 1 (logged and synced) and died before any store applied it."""
    stores = {"lmdb": LMDBMemoryAdapter(path=tmp_path / "lmdb", sync=False),
              "duckdb": DuckDBMemoryAdapter(path=tmp_path / "items.duckdb", sync=False),
              "tinydb": TinyDBMemoryAdapter(path=tmp_path / "items.json", sync=False)}
    manager = MemoryManager(stores, transaction_log=tmp_path / "txlog")
    manager.store(sample_item(0))
    crash_at(manager, "after_log_sync")
    with pytest.raises(SimulatedCrash):
        manager.store(sample_item(1))
    abandon(manager)
    return [f"lmdb:{tmp_path / 'lmdb'}", f"duckdb=duckdb:{tmp_path / 'items.duckdb'}",
            f"tinydb=tinydb:{tmp_path / 'items.json'}"]


def test_recover_dry_run_reads_the_log_only(tmp_path, capsys) -> None:
    specs = crashed(tmp_path)
    before = files(tmp_path)
    code, summary, _ = run(capsys, "recover", "--log", str(tmp_path / "txlog"), "--dry-run", *specs)
    assert code == 0 and files(tmp_path) == before
    last = summary["commits"][-1]
    assert last["stores"] == ["duckdb", "lmdb", "tinydb"] and not last["ended"] and last["operations"] == 3
    code, text = run_text(capsys, "recover", "--log", str(tmp_path / "txlog"), "--dry-run")
    assert code == 0 and last["txid"] in text and "would redo" in text


def test_recover_redoes_the_crashed_transaction_and_reports_it(tmp_path, capsys) -> None:
    specs = crashed(tmp_path)
    txid = CoordinatorLog(tmp_path / "txlog").scan().commits[-1]["txid"]
    code, text = run_text(capsys, "recover", "--log", str(tmp_path / "txlog"), *specs)
    assert code == 0, text
    assert "redone" in text and txid in text and "recovered" in text
    for store in (LMDBMemoryAdapter(path=tmp_path / "lmdb"), TinyDBMemoryAdapter(path=tmp_path / "items.json"),
                  DuckDBMemoryAdapter(path=tmp_path / "items.duckdb")):
        try:
            assert store.retrieve("item-00001") is not None, store
        finally:
            store.close()


def test_recover_without_a_store_the_log_needs_reports_it_and_exits_1(tmp_path, capsys) -> None:
    specs = crashed(tmp_path)
    code, result, _ = run(capsys, "recover", "--log", str(tmp_path / "txlog"), *specs[:2])
    assert code == 1 and not result["ok"] and "tinydb" in result["failed_stores"]
    assert any(r["txid"] and r.get("stores") for r in result["redone"])
    assert CoordinatorLog(tmp_path / "txlog").scan().commits, "the writes tinydb lacks must stay in the log"


def test_recover_refuses_bad_arguments(tmp_path, capsys) -> None:
    code, _, err = run(capsys, "recover", "--log", str(tmp_path / "nolog"), f"lmdb:{tmp_path / 'x'}")
    assert code == 2 and "no transaction log" in err and not (tmp_path / "nolog").exists()
    specs = crashed(tmp_path)
    code, _, err = run(capsys, "recover", "--log", str(tmp_path / "txlog"), specs[0], f"lmdb:{tmp_path / 'y'}")
    assert code == 2 and "two stores are named 'lmdb'" in err
    code, _, err = run(capsys, "recover", "--log", str(tmp_path / "txlog"))
    assert code == 2 and "--dry-run" in err
