"""The kit is only worth something if it fails adapters that lose, corrupt or resurrect data."""

from __future__ import annotations

import pytest

from memsys.testing.plugin import SERVER_UNAVAILABLE, servers_required
from memsys.testing.verify import run_contract
from tests.kit import broken_adapters
from tests.kit.jsonl_store import JsonlStore


def test_a_correct_outside_adapter_passes_with_skips_for_undeclared_capabilities() -> None:
    report = run_contract(JsonlStore)
    assert report.ok, {n: r.detail for n, r in report.results.items() if r.outcome == "failed"}
    assert "test_round_trip_keeps_every_field" in report.by_outcome("passed")
    skipped = report.results["test_transaction_rollback_leaves_the_store_as_it_was"]
    assert skipped.outcome == "skipped" and "'transactions' capability" in skipped.detail


@pytest.mark.parametrize(
    ("adapter", "must_fail"),
    [
        (broken_adapters.DropsMetadataStore, ["test_round_trip_keeps_every_field", "test_search_matches_the_reference_semantics",
                                              "test_stateful_model_agrees_with_the_reference"]),
        (broken_adapters.ResurrectingStore, ["test_reopen_keeps_acknowledged_writes_and_deletes",
                                             "test_last_writes_before_close_survive_reopen",
                                             "test_stateful_model_agrees_with_the_reference"]),
        (broken_adapters.LosesLastWritesStore, ["test_reopen_keeps_acknowledged_writes_and_deletes",
                                                "test_last_writes_before_close_survive_reopen",
                                                "test_stateful_model_agrees_with_the_reference"]),
        (broken_adapters.LeaksDriverErrorsStore, ["test_closed_store_raises_typed_errors",
                                                  "test_corrupt_files_raise_typed_errors_and_are_never_overwritten"]),
        (broken_adapters.DuplicatingStore, ["test_store_of_existing_id_updates_without_duplicating",
                                            "test_stateful_model_agrees_with_the_reference"]),
    ],
    ids=lambda v: v.__name__ if isinstance(v, type) else None,
)
def test_the_kit_fails_each_broken_adapter_by_name(adapter: type, must_fail: list[str]) -> None:
    report = run_contract(adapter, pytest_args=["-k", " or ".join(must_fail)])
    assert not report.ok
    for check in must_fail:
        assert report.outcome(check) == "failed", f"{adapter.__name__} passed {check}"


@pytest.mark.parametrize(
    ("adapter", "check"),
    [
        (broken_adapters.AliasingStore, "test_stored_and_returned_items_never_alias_the_caller"),
        (broken_adapters.UnlockedRewritingStore, "test_a_second_opener_is_refused_or_safe"),
        (broken_adapters.DropsDamagedRecordsStore, "test_damage_inside_a_stored_value_is_detected"),
        (broken_adapters.CrashesOnDamageStore, "test_damage_inside_a_stored_value_is_detected"),
        (broken_adapters.FailsUnderSustainedUpdatesStore, "test_sustained_updates_keep_only_the_latest_values"),
        (broken_adapters.IgnoresFullDiskStore, "test_disk_full_is_a_typed_error_and_loses_nothing"),
    ],
    ids=lambda v: v.__name__ if isinstance(v, type) else None,
)
def test_the_real_fault_checks_fail_the_adapter_each_exists_for(adapter: type, check: str) -> None:
    report = run_contract(adapter, pytest_args=["-k", check])
    result = report.results[check]
    if result.outcome == "skipped" and SERVER_UNAVAILABLE in result.detail and not servers_required():
        pytest.skip(result.detail)  # no small file system here; CI mounts one
    assert result.outcome == "failed", f"{adapter.__name__} passed {check}: {result.detail}"


def test_the_real_fault_checks_pass_a_correct_outside_adapter() -> None:
    checks = ["test_damage_inside_a_stored_value_is_detected", "test_truncated_files_never_return_a_different_value",
              "test_a_second_opener_is_refused_or_safe", "test_stored_and_returned_items_never_alias_the_caller",
              "test_sustained_updates_keep_only_the_latest_values", "test_disk_full_is_a_typed_error_and_loses_nothing"]
    report = run_contract(JsonlStore, pytest_args=["-k", " or ".join(checks)])
    assert sorted(report.results) == sorted(checks)
    for check in checks:
        outcome = report.outcome(check)
        assert outcome == "passed" or (outcome == "skipped" and not servers_required()), \
            f"{check}: {outcome}: {report.results[check].detail}"


class NoSmallDiskStore(JsonlStore):
    disk_full_unsupported = "keeps its files on a server, not under path"


def test_a_store_opts_out_of_the_disk_full_check_with_a_reason() -> None:
    report = run_contract(NoSmallDiskStore, pytest_args=["-k", "disk_full"])
    result = report.results["test_disk_full_is_a_typed_error_and_loses_nothing"]
    assert result.outcome == "skipped" and "keeps its files on a server" in result.detail
