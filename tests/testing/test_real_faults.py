"""The real-fault experiments and their building blocks have teeth: each catches the broken
store it exists for, counts a crash or a hang instead of suffering it, and runs on every
store, the coordinator log and a manager at a tiny dose."""

from __future__ import annotations

import functools
import json
import os
import random
import shutil
import signal
import time

import pytest

from memsys.testing import chaos, damage, real_faults
from memsys.testing.isolate import run_isolated
from tests.kit import broken_adapters
from tests.kit.jsonl_store import JsonlStore

# --- child processes -------------------------------------------------------------------------------


def _returns(value: int) -> dict:
    return {"value": value}


def _raises() -> None:
    raise KeyError("untyped")


def _segfaults() -> None:
    os.kill(os.getpid(), signal.SIGSEGV)


def _hangs() -> None:
    time.sleep(600)


def _eats_memory() -> None:
    hoard = []
    while True:
        hoard.append(bytearray(b"\1" * (32 << 20)))


def test_isolated_calls_report_crashes_hangs_and_runaways_and_go_on() -> None:
    outcomes = run_isolated([functools.partial(_returns, 1), _raises, _segfaults, functools.partial(_returns, 2),
                             _hangs, _eats_memory, functools.partial(_returns, 3)],
                            timeout=3, rss_limit=256 << 20)
    assert [o.status for o in outcomes] == ["returned", "raised", "crashed", "returned", "hung", "runaway",
                                            "returned"]
    assert [o.value for o in outcomes if o.status == "returned"] == [{"value": 1}, {"value": 2}, {"value": 3}]
    assert outcomes[1].error["name"] == "KeyError" and not outcomes[1].error["memsys"]
    assert "SIGSEGV" in outcomes[2].detail


# --- damage: where the bytes are, and what may be dropped ------------------------------------------


def _image(store_class: type, folder: str, items: int = 12) -> damage.StoreImage:
    return damage.build_image(store_class, folder, items=items, seed=3)


def test_values_are_found_in_the_files_and_only_the_last_append_is_a_torn_tail(tmp_path) -> None:
    image = _image(JsonlStore, str(tmp_path / "p"))
    assert image.sizes == {"store": os.path.getsize(tmp_path / "p" / "store")}
    assert all(list(where) == ["store"] and len(where["store"]) == 1 for where in image.found.values())
    spans = image.logs["store"]
    assert [sorted(ids) for _, _, ids in spans[1:]] == [[f"damage-{i:03d}"] for i in range(1, 12)]
    last_start = spans[-1][0]
    assert image.torn("store", last_start) == {"damage-011"}
    assert image.torn("store", last_start - 1) == set(), "a flip before the last append is no torn tail"
    cut = spans[6][0] + 3  # inside the record of damage-006
    assert image.torn("store", cut, to_end=True) == {f"damage-{i:03d}" for i in range(6, 12)}
    [trial] = damage.truncations(image, ["store"])
    assert trial.strict.isdisjoint(trial.tail) and trial.tail


def test_flip_truncate_and_zero_change_exactly_what_they_say(tmp_path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"abcdefgh" * 1024)
    damage.flip_bit(str(path), 3)
    assert path.read_bytes()[3:4] == bytes([ord("d") ^ 1])
    assert damage.zero_block(str(path), 5000) == (4096, 8192)
    assert path.read_bytes()[4096:8192] == b"\0" * 4096 and path.read_bytes()[4095] != 0
    damage.truncate(str(path), 100)
    assert path.stat().st_size == 100


def test_a_correct_store_passes_every_kind_of_damage(tmp_path) -> None:
    image = _image(JsonlStore, str(tmp_path / "p"))
    trials = damage.plan_trials(image, damage.DamagePlan(value_flips=2, random_flips=0, zero_value_blocks=1), 1)
    tally = damage.run_damage(JsonlStore, image, trials, str(tmp_path / "t"), timeout=60)
    assert not tally.failed, tally.summary()
    assert tally.detected > 0 and tally.faults == len(trials)


def test_damage_catches_a_store_that_drops_damaged_records(tmp_path) -> None:
    image = _image(broken_adapters.DropsDamagedRecordsStore, str(tmp_path / "p"))
    trials = damage.value_flips(image, random.Random(1), 2)
    tally = damage.run_damage(broken_adapters.DropsDamagedRecordsStore, image, trials, str(tmp_path / "t"))
    assert tally.lost == 2 and "silently missing" in tally.summary()


@pytest.mark.parametrize(("store", "kind"), [(broken_adapters.CrashesOnDamageStore, "crashed"),
                                             (broken_adapters.HangsOnDamageStore, "hung")])
def test_damage_counts_a_reader_that_crashes_or_hangs(tmp_path, store: type, kind: str) -> None:
    image = _image(store, str(tmp_path / "p"))
    trials = damage.value_flips(image, random.Random(1), 1) * 2  # the second runs in a fresh child
    tally = damage.run_damage(store, image, trials, str(tmp_path / "t"), timeout=3)
    assert getattr(tally, kind) == 2 and tally.failed, tally.summary()


# --- second opener, sustained updates, disk full ------------------------------------------------


def test_a_second_opener_of_a_locked_store_is_refused_everywhere(tmp_path) -> None:
    result = real_faults.opener_trial(JsonlStore, str(tmp_path / "s" / "store"), writes=5)
    assert (result.in_process, result.other_process) == ("refused", "refused")
    assert not result.tally.failed, result.tally.summary()


def test_a_second_opener_that_overwrites_the_first_is_caught(tmp_path) -> None:
    from memsys.domain.errors import CorruptStoreError

    try:
        result = real_faults.opener_trial(broken_adapters.UnlockedRewritingStore, str(tmp_path / "s" / "store"),
                                          writes=5)
    except CorruptStoreError as exc:
        # The two openers' rewrites interleaved into a damaged file (timing decides which): caught too.
        assert "checksum" in str(exc)
        return
    assert result.in_process == "shared" and result.tally.lost > 0, result.tally.summary()


def test_sustained_updates_catch_a_store_that_runs_out_of_room(tmp_path) -> None:
    store = broken_adapters.FailsUnderSustainedUpdatesStore(str(tmp_path / "s"))
    try:
        tally, latest, _ = real_faults.soak_trial(store, 400)
    finally:
        store.close()
    assert tally.errors == 1 and "buffer pool is full" in tally.summary()
    store = JsonlStore(str(tmp_path / "ok"))
    try:
        tally, latest, _ = real_faults.soak_trial(store, 400, folder=str(tmp_path))
        real_faults._latest_check(store, latest, tally, "after", stamped=False)
    finally:
        store.close()
    assert not tally.failed and len(latest) == 6, tally.summary()


def test_disk_full_loses_nothing_on_a_correct_store_and_catches_a_lying_one(small_disk) -> None:
    tally = real_faults.disk_full_trial(JsonlStore, os.path.join(small_disk, "a"), seed=1, item_bytes=32 << 10,
                                        leave=256 << 10)
    assert not tally.failed and tally.faults >= 1, tally.summary()
    assert tally.notes[0].startswith("refusals: DiskFullError")
    shutil.rmtree(os.path.join(small_disk, "a"))  # the second trial needs the room
    tally = real_faults.disk_full_trial(broken_adapters.IgnoresFullDiskStore, os.path.join(small_disk, "b"), seed=1,
                                        item_bytes=32 << 10, leave=256 << 10)
    assert tally.lost > 0, tally.summary()


def test_disk_full_without_a_mount_is_unavailable_and_fails_in_ci(tmp_path, monkeypatch) -> None:
    import contextlib

    from memsys.testing import disk

    @contextlib.contextmanager
    def refused(folder, size=0):
        raise disk.DiskFaultUnavailable("mounting a tmpfs needs root")
        yield  # pragma: no cover

    monkeypatch.setattr(disk, "small_filesystem", refused)
    for variable in ("CI", "MEMSYS_REQUIRE_SERVERS"):
        monkeypatch.delenv(variable, raising=False)
    result = real_faults.disk_full("lmdb", str(tmp_path / "a"), 0, real_faults.DOSES["tiny"])
    assert result.status == "unavailable" and result.ok and "needs root" in result.detail
    monkeypatch.setenv("CI", "true")
    result = real_faults.disk_full("lmdb", str(tmp_path / "b"), 0, real_faults.DOSES["tiny"])
    assert result.status == "FAILED" and not result.ok


# --- the experiments in `memsys chaos run` ----------------------------------------------------------


def test_every_store_the_log_and_a_manager_get_every_real_fault() -> None:
    groups = real_faults.fault_plan("/nowhere", 0, real_faults.DOSES["tiny"])
    planned = {(name, target) for _, group in groups for name, target, _ in group}
    kinds = {"disk full", "damaged files", "second opener", "oversized and out-of-range writes", "sustained updates"}
    assert {(k, b) for k in kinds for b in chaos.SEVEN} <= planned
    assert {("disk full", "coordinator log"), ("damaged files", "coordinator log"),
            ("second opener", "coordinator log"), ("disk full", "manager lmdb+duckdb+kuzu+tinydb"),
            ("oversized and out-of-range writes", "transaction kuzu+duckdb+lmdb")} <= planned
    quick, default = real_faults.DOSES["quick"], real_faults.DOSES["default"]
    assert max(quick.oversized) == 64 << 20 and quick.soak_direct + quick.soak_managed >= 2000
    assert default.soak_direct > quick.soak_direct and default.damage_items > quick.damage_items


def _crash_experiment() -> dict:
    os.kill(os.getpid(), signal.SIGSEGV)
    return {}  # pragma: no cover


def test_an_experiment_that_kills_its_process_is_counted_as_crashed() -> None:
    [result] = real_faults.run_group([("boom", "store", functools.partial(_crash_experiment))],
                                     real_faults.DOSES["tiny"])
    assert (result.name, result.crashed, result.status, result.ok) == ("boom", 1, "FAILED", False)


GROUPS = [description for description, _ in real_faults.fault_plan("/nowhere", 0, real_faults.DOSES["tiny"])]


@pytest.mark.parametrize("group", GROUPS)
def test_real_fault_experiments_find_nothing_wrong_at_a_tiny_dose(tmp_path, group: str) -> None:
    results = chaos.run_experiments(str(tmp_path), seed=2, quick=True, dose="tiny", only=[group])
    assert len(results) == 5
    for r in results:
        assert r.status in ("ok", "unavailable") and r.ok, f"{r.name} ({r.target}): {r.status}: {r.detail}"
        assert r.attempted > 0 or r.status == "unavailable", r
    mounts = open("/proc/mounts").read()
    assert str(tmp_path) not in mounts, "an experiment left its small file system mounted"


def test_the_report_counts_hung_crashed_and_errors(tmp_path) -> None:
    status = chaos.run_chaos(workdir=str(tmp_path), seed=1, quick=True, dose="tiny", only=["real faults: lmdb"])
    report = json.loads((tmp_path / "report.json").read_text())
    assert {"hung", "crashed", "errors", "lost", "partial", "unexpected"} <= set(report["totals"])
    assert {e["name"] for e in report["experiments"]} == {
        "disk full", "damaged files", "second opener", "oversized and out-of-range writes", "sustained updates"}
    assert status == 0 and all(e["hung"] == e["crashed"] == e["errors"] == 0 for e in report["experiments"])
