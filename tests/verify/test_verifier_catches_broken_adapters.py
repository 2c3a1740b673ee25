"""The verifier has teeth: each broken adapter fails the section and check that names its bug.

The broken adapters (tests/verify/broken_adapters.py) are third-party style: the guide's example
adapter plus one bug, built only on memsys.adapters.base. They pass the conformance kit (run here
when MEMSYS_VERIFY_DEEP is set: about 15 s each), so only the new sections can catch them.
"""

from __future__ import annotations

import os

import pytest

from memsys.testing.verify import run_verify
from tests.verify.broken_adapters import CAUGHT_BY

DEEP = bool(os.environ.get("MEMSYS_VERIFY_DEEP"))


@pytest.mark.parametrize("adapter", list(CAUGHT_BY), ids=lambda cls: cls.__name__)
def test_broken_adapter_fails_its_section_by_name(adapter: type, tmp_path) -> None:
    section, check = CAUGHT_BY[adapter]
    report = run_verify(adapter, sections=[section], seed=0, dose="quick", workdir=os.fspath(tmp_path))
    assert not report.ok
    assert f"{section}.{check}" in report.failed_names(), \
        f"{adapter.__name__} should fail {section}.{check}; failed: {sorted(report.failed_names())}; " + \
        "; ".join(f"{c.section}.{c.name}: {c.detail[:200]}" for c in report.checks)
    failure = next(c for c in report.failures() if c.name == check)
    assert "reproduce" in failure.detail


#: The contract checks nearest to each bug: in CI each broken adapter must pass these (the whole
#: contract runs with MEMSYS_VERIFY_DEEP=1), so the kit alone would let the bug through.
NEAREST = {
    "AcksBeforeDurableStore": ["reopen_keeps_acknowledged_writes_and_deletes", "last_writes_before_close_survive_reopen",
                               "concurrent_writers_lose_nothing", "stateful_model_agrees_with_the_reference"],
    "RollbackDoesNotRestoreStore": ["transaction_commit_applies_everything_and_isolates_until_then",
                                    "transaction_rollback_leaves_the_store_as_it_was",
                                    "transaction_prepare_rejects_bad_writes_and_changes_nothing"],
    "RetriedWriteAppliesTwiceStore": ["store_of_existing_id_updates_without_duplicating", "batch_operations",
                                      "stateful_model_agrees_with_the_reference"],
    "StaleReadAfterFailedWriteStore": ["round_trip_keeps_every_field", "store_of_existing_id_updates_without_duplicating",
                                       "delete_reports_whether_the_item_existed",
                                       "stateful_model_agrees_with_the_reference"],
    "HangsUnderLatencyStore": ["concurrent_writers_lose_nothing", "stateful_model_agrees_with_the_reference"],
}


@pytest.mark.parametrize("adapter", list(CAUGHT_BY), ids=lambda cls: cls.__name__)
def test_broken_adapter_passes_the_contract_checks_nearest_its_bug(adapter: type) -> None:
    from memsys.testing.verify import run_contract

    checks = [f"test_{name}" for name in NEAREST[adapter.__name__]]
    report = run_contract(adapter, pytest_args=["-k", " or ".join(checks)])
    assert sorted(report.results) == sorted(checks)
    assert report.ok, {n: r.detail[:300] for n, r in report.results.items() if r.outcome != "passed"}


@pytest.mark.skipif(not DEEP, reason="the contract on every broken adapter takes ~75 s: set MEMSYS_VERIFY_DEEP=1")
@pytest.mark.parametrize("adapter", list(CAUGHT_BY), ids=lambda cls: cls.__name__)
def test_broken_adapter_passes_the_contract(adapter: type, tmp_path) -> None:
    report = run_verify(adapter, sections=["contract"], seed=0, dose="quick", workdir=os.fspath(tmp_path))
    assert report.ok, [f"{c.name}: {c.detail[:300]}" for c in report.failures()]
