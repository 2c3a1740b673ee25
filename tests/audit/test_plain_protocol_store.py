"""A store that only follows the public protocol (not a BaseMemoryStore subclass, defined outside
the memsys package) goes through the verifier's faults and crash sections, alone and as
a ForeignStore-wrapped participant of cross-store transactions with LMDB and DuckDB."""

from __future__ import annotations

import os

from memsys.testing import run_verify


def test_plain_protocol_store_passes_faults_and_crash(tmp_path) -> None:
    report = run_verify("tests.audit.plain_store:PlainJsonStore", sections=["faults", "crash"],
                        seed=4, dose="quick", workdir=os.fspath(tmp_path))
    assert report.ok, [f"{c.section}.{c.name}: {c.detail[:400]}" for c in report.failures()]
    ran = {(c.section, c.name) for c in report.checks if c.outcome == "passed"}
    # The cross-store checks really ran (they are not skipped for a store without TRANSACTIONS).
    assert {("faults", "cross_store_all_or_nothing"),
            ("crash", "transactions_all_or_nothing_after_sigkill")} <= ran
