"""The kit is only worth something if it fails adapters that lose, corrupt or resurrect data."""

from __future__ import annotations

import pytest

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
    report = run_contract(adapter)
    assert not report.ok
    for check in must_fail:
        assert report.outcome(check) == "failed", f"{adapter.__name__} passed {check}"
