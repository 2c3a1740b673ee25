"""A check skipped for an undeclared capability says which check it was (pytest -rs shows only a
line of contract.py, the same for every check)."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def test_skip_reasons_name_the_check_and_the_capability(tmp_path) -> None:
    (tmp_path / "test_plain_store.py").write_text(textwrap.dedent("""
        from memsys.adapters.memory_store import InMemoryStore
        from memsys.testing import MemoryStoreContract

        class TestPlain(MemoryStoreContract):
            def create_store(self, path):
                return InMemoryStore()
    """))
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "-k",
                          "corrupt_files", str(tmp_path)], capture_output=True, text=True, timeout=300,
                         cwd=tmp_path)
    skipped = [line for line in run.stdout.splitlines() if line.startswith("SKIPPED")]
    assert skipped, run.stdout + run.stderr
    assert "test_corrupt_files_raise_typed_errors_and_are_never_overwritten:" in skipped[0]
    assert "'persistence' capability" in skipped[0]
