"""SIGKILL at seeded random instants and at every named protocol step: nothing lost, nothing partial."""

from __future__ import annotations

import os
import subprocess
import sys

from memsys.testing.crash import FAST_BACKENDS, check_workdir, run_campaign


def test_one_hundred_kills_lose_nothing_and_leave_nothing_partial(tmp_path) -> None:
    # The four stores without slow imports, so 100 kills fit in CI; all seven are killed in
    # tests/testing/test_crash_all_stores.py and in `memsys chaos crash` (the default).
    result = run_campaign(kills=100, seed=20261125, workdir=str(tmp_path), transactions=120, progress=False,
                          backends=FAST_BACKENDS)
    summary = result.summary()
    assert result.kills == 100
    assert summary["lost"] == 0 and summary["partial"] == 0 and summary["unexpected"] == 0, summary
    # The kills at named steps come after a seeded 1-12 transactions each, so about 275
    # acknowledgements do not depend on how fast the machine is; random instants add more.
    assert summary["acknowledged"] > 250
    assert summary["recovered"] > 0, "no kill ever landed between the decision and the acknowledgement"
    named = {k: v for k, v in result.per_step.items() if k != "random instant"}
    assert len(named) == 6 and min(named.values()) >= 8, result.per_step


def test_the_campaign_catches_a_recovery_that_does_not_redo(tmp_path) -> None:
    """Delete the coordinator log after a kill between two stores' applies: the checker must see it."""
    result = run_campaign(kills=1, seed=3, workdir=str(tmp_path), transactions=50, progress=False,
                          backends=FAST_BACKENDS)
    assert result.valid
    # A kill after the first store applied, then a lost log: that transaction can only be partial.
    subprocess.run([sys.executable, "-m", "memsys.testing.crash", "worker", "--workdir", str(tmp_path), "--seed", "9",
                    "--round", "99", "--transactions", "20", "--crash-step", "after_first_apply",
                    "--crash-after", "3"], capture_output=True, timeout=120)
    os.remove(tmp_path / "txlog")
    check, _ = check_workdir(str(tmp_path))
    assert not check.valid and check.partial, check.counts()
