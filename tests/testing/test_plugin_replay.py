"""A failing test that injected port faults prints the line that replays them."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def test_a_failing_test_with_fired_faults_prints_the_replay_line(tmp_path) -> None:
    (tmp_path / "conftest.py").write_text('pytest_plugins = ["memsys.testing.plugin"]\n')
    (tmp_path / "test_fails.py").write_text(textwrap.dedent("""
        from memsys.adapters.memory_store import InMemoryStore
        from memsys.testing import FaultPlan, sample_item, wrap_store

        def test_fails():
            plan = FaultPlan(seed=4242).add(method="store", kind="transient")
            store = wrap_store(InMemoryStore(), plan)
            try:
                store.store(sample_item(1))
            except Exception:
                pass
            assert False, "the store failed"
    """))
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert run.returncode == 1, run.stdout + run.stderr
    assert "fault plans (replay)" in run.stdout and "4242" in run.stdout, run.stdout
