"""memsys inspect / diff / repair / recover on the seven real adapters, by store spec: inspect
reports each store, diff finds exactly the drift of a pair by digests, a dry run changes no byte,
and repair leaves the two stores equal, versions kept."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from memsys import MemoryManager
from memsys.testing import sample_item
from memsys.testing.chaos import SEVEN, embedded_spec, open_store
from memsys.testing.crash import SimulatedCrash, abandon, crash_at
from memsys.tools import main


def run(capsys, *argv: str) -> tuple[int, object, str]:
    code = main([*argv, "--json"])
    out, err = capsys.readouterr()
    return code, (json.loads(out) if out.strip() else None), err


def run_text(capsys, *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out + err


def files(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and not p.name.endswith(".memsys-lock")}


def fill(backend: str, folder: Path, items) -> str:
    store = open_store(backend, str(folder))
    try:
        store.store_many(items)
    finally:
        store.close()
    return str(embedded_spec(backend, str(folder)))


BASE = [sample_item(i, version=3) for i in range(12)]
A_DRIFT = [sample_item(100, version=2),                                        # only in A
           sample_item(101, version=7, content="a is newer"),                  # newer in A
           sample_item(102, version=4, content="a is older"),                  # newer in B
           sample_item(103, version=5, content="a side")]                      # conflicting
B_DRIFT = [sample_item(200, version=9),                                        # only in B
           sample_item(101, version=6, content="b is older"),
           sample_item(102, version=8, content="b is newer"),
           sample_item(103, version=5, content="b side").replace(
               updated_at=sample_item(103).updated_at.replace(year=2031))]


@pytest.mark.parametrize("backend", SEVEN)
def test_inspect_reports_every_real_store(tmp_path, capsys, backend) -> None:
    spec = fill(backend, tmp_path / "s", BASE)
    code, report, _ = run(capsys, "inspect", spec, "--sample", "2")
    assert code == 0 and report["healthy"] and report["error"] is None, report
    assert report["count"] == 12 and [s["id"] for s in report["sample"]] == ["item-00000", "item-00001"]
    assert report["sample"][0]["version"] == 3 and report["on_disk_bytes"] > 0
    assert "persistence" in report["capabilities"] and len(report["digest"]) == 32
    code, text = run_text(capsys, "inspect", spec)
    assert code == 0 and "healthy" in text and "item-00004" in text and report["digest"] in text


@pytest.mark.parametrize("backend", [b for b in SEVEN if b != "lmdb"])
def test_diff_then_repair_make_a_drifted_pair_equal(tmp_path, capsys, backend) -> None:
    spec_a = fill("lmdb", tmp_path / "a", BASE + A_DRIFT)
    spec_b = fill(backend, tmp_path / "b", BASE + B_DRIFT)
    code, diff, _ = run(capsys, "diff", spec_a, spec_b, "--buckets", "32")
    assert code == 1 and not diff["equal"]
    assert (diff["only_a"], diff["only_b"], diff["newer_a"], diff["newer_b"], diff["conflicting"]) == \
        (["item-00100"], ["item-00200"], ["item-00101"], ["item-00102"], ["item-00103"])
    assert diff["versions"]["item-00102"] == [4, 8] and diff["items_a"] == diff["items_b"] == 16
    assert diff["compared_items"] < 32  # only the differing ranges were compared id by id

    digests = [run(capsys, "inspect", spec)[1]["digest"] for spec in (spec_a, spec_b)]
    before = files(tmp_path)
    code, plan, _ = run(capsys, "repair", spec_a, spec_b, "--dry-run")
    assert code == 1 and [run(capsys, "inspect", spec)[1]["digest"] for spec in (spec_a, spec_b)] == digests
    if backend not in ("kuzu", "chroma"):  # those two engines rewrite their files on any open and close
        assert files(tmp_path) == before  # a dry run changes no byte of either store
    changes = {(c["store"], c["id"]): (c["from_version"], c["to_version"]) for c in plan["changes"]}
    assert changes == {("b", "item-00100"): (None, 2), ("b", "item-00101"): (6, 7), ("a", "item-00102"): (4, 8),
                       ("a", "item-00103"): (5, 5), ("a", "item-00200"): (None, 9)}

    code, text = run_text(capsys, "repair", spec_a, spec_b)
    assert code == 0, text
    assert "changes made" in text and "item-00103" in text and "the stores agree" in text
    code, after, _ = run(capsys, "diff", spec_a, spec_b)
    assert code == 0 and after["equal"] and after["items_a"] == after["items_b"] == 17
    _, inspect_a, _ = run(capsys, "inspect", spec_a)
    _, inspect_b, _ = run(capsys, "inspect", spec_b)
    assert inspect_a["digest"] == inspect_b["digest"]  # equal content, versions included
    store = open_store(backend, str(tmp_path / "b"))
    try:
        assert store.retrieve("item-00103").content == "b side"  # the later updated_at won the conflict
        assert store.retrieve("item-00101").version == 7
    finally:
        store.close()


def test_recover_reports_and_redoes_a_crashed_transaction_on_the_seven_stores(tmp_path, capsys) -> None:
    folders = {b: str(tmp_path / b) for b in SEVEN}
    manager = MemoryManager({b: open_store(b, folders[b]) for b in SEVEN}, transaction_log=tmp_path / "txlog")
    manager.store(sample_item(0))
    crash_at(manager, "after_log_sync")
    with pytest.raises(SimulatedCrash):
        manager.store(sample_item(1))
    abandon(manager)
    specs = [f"{b}={embedded_spec(b, folders[b])}" for b in SEVEN]
    before = files(tmp_path)
    code, plan, _ = run(capsys, "recover", "--log", str(tmp_path / "txlog"), "--dry-run", *specs)
    assert code == 0 and files(tmp_path) == before
    assert plan["commits"][-1]["stores"] == sorted(SEVEN) and not plan["commits"][-1]["ended"]
    code, done, _ = run(capsys, "recover", "--log", str(tmp_path / "txlog"), *specs)
    assert code == 0 and done["ok"] and plan["commits"][-1]["txid"] in [r["txid"] for r in done["redone"]]
    for backend in SEVEN:
        code, report, _ = run(capsys, "inspect", str(embedded_spec(backend, folders[backend])))
        assert code == 0 and report["count"] == 2, (backend, report)
