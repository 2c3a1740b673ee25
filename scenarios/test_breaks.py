"""CI for the proof by seeded breaks (``python -m scenarios.breaks``): every known break of memsys
still applies to the source, and each is caught by at least one of its selected tests.

CI runs the breaks without the baseline (the suite itself runs those tests on the unbroken code)
and stops each break's tests at the first failure; ``python -m scenarios.breaks`` runs the
baseline and names every catching test.
"""

from __future__ import annotations

import pytest

from memsys.testing.plugin import skip_server_unavailable
from memsys.testing.powerloss import PowerLossUnavailable, power_loss_fs
from scenarios.breaks import BREAKS, AnchorError, Break, Edit, apply_break, check_anchors, format_table, run, \
    run_tests


def test_every_break_applies_to_the_current_source() -> None:
    assert check_anchors() == [], "a break no longer applies: the code moved, move the break with it"
    assert len({b.name for b in BREAKS}) == len(BREAKS) >= 19


def test_an_anchor_that_is_missing_or_ambiguous_is_an_error_not_a_pass(tmp_path) -> None:
    (tmp_path / "m.py").write_text("def f():\n    x = 1\n    x = 1\n    return x\n")
    with pytest.raises(AnchorError, match="found 0 times"):
        Edit("m.py", "y = 2", "y = 3").apply((tmp_path / "m.py").read_text())
    with pytest.raises(AnchorError, match="found 2 times"):
        Edit("m.py", "x = 1", "x = 2").apply((tmp_path / "m.py").read_text())
    with pytest.raises(AnchorError, match="unparsable"):
        apply_break(Break("bad", "", (Edit("m.py", "return x", "return (x"),), ()), str(tmp_path))
    apply_break(Break("ok", "", (Edit("m.py", "return x", "if x:\n    x += 1\nreturn x"),), ()), str(tmp_path))
    assert (tmp_path / "m.py").read_text().endswith("    if x:\n        x += 1\n    return x\n")


def test_a_harmless_edit_is_not_counted_as_caught() -> None:
    # The same text back: the tests pass on the copy, so nothing is caught (and the child pytest
    # refused to run unless memsys came from the copy).
    harmless = Break("harmless", "no change", (Edit("memsys/resilience/retry.py", "chance = rng or random.Random()",
                                                    "chance = rng or random.Random()"),),
                     ("tests/breaks/test_breaker_outages.py",))
    result = run_tests(harmless.name, harmless.tests, harmless)
    assert result.error is None and result.caught_by == [], result.output


@pytest.mark.server  # the fsync breaks are caught only on the power-loss (FUSE) mount
def test_every_seeded_break_is_caught(tmp_path) -> None:
    try:
        with power_loss_fs(tmp_path):
            pass
    except PowerLossUnavailable as exc:  # without FUSE the fsync breaks cannot be caught (CI: a failure)
        skip_server_unavailable(f"power-loss filesystem: {exc}")
    results, _ = run(BREAKS, jobs=2, baseline=False, exitfirst=True, progress=False)
    missed = [r for r in results if not r.caught]
    details = "\n".join(f"--- {r.name}: {r.error or 'no selected test failed'}\n{r.output}" for r in missed)
    assert not missed, f"\n{format_table(results)}\n{details}"
