"""Importing memsys, or running `memsys --help`, loads no backend and no harness tool."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ["chromadb", "duckdb", "kuzu", "faiss", "lmdb", "tinydb", "networkx", "hypothesis", "locust", "pytest",
         "numpy"]

PROBE = """
import sys, json
{code}
print(json.dumps([m for m in {heavy!r} if m in sys.modules]))
"""


@pytest.mark.parametrize("code", [
    "import memsys",
    "import memsys.adapters",
    "from memsys.adapters import LMDBMemoryAdapter, ChromaDBVectorStore, KuzuMemoryAdapter",
    "from memsys import MemoryItem, MemoryType, MemoryManager",
    "import memsys.cli as c; c.build_parser().format_help()",
])
def test_import_loads_no_backend_or_harness_tool(code: str) -> None:
    out = subprocess.run([sys.executable, "-c", PROBE.format(code=code, heavy=HEAVY)], capture_output=True,
                         text=True, timeout=60, check=True).stdout
    assert json.loads(out) == []


def test_memsys_help_runs_and_loads_nothing_heavy() -> None:
    code = ("import sys, runpy; sys.argv=['memsys','--help']\n"
            "try:\n    runpy.run_module('memsys.cli', run_name='__main__')\nexcept SystemExit:\n    pass\n"
            f"import json; print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True).stdout
    assert "verify-adapter" in out and "chaos" in out
    assert json.loads(out.strip().splitlines()[-1]) == []
