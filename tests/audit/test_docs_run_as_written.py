"""The guides' code runs as written: the routing, SyncManager and QueryRouter examples of
docs/operating.md (executed from the file, so a drift between the guide and the API fails here)
and the import block of
docs/adapters.md (every helper it names is exported by memsys.adapters.base)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import memsys.adapters.base as base

DOCS = Path(__file__).resolve().parents[2] / "docs"


def _python_blocks(name: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", (DOCS / name).read_text(), re.S)


def test_operating_routing_example_runs_as_written(tmp_path, monkeypatch) -> None:
    block = next(b for b in _python_blocks("operating.md") if "routing=" in b)
    monkeypatch.chdir(tmp_path)  # the example uses relative paths under m/
    scope: dict = {}
    exec(compile(block, "docs/operating.md", "exec"), scope)
    manager = scope["manager"]
    try:
        assert manager.route(scope["item"]) == ["duckdb", "faiss", "kuzu"]
        # The example ends with a delete: the item is gone from every store it was routed to.
        assert all(manager.adapters[name].retrieve("fn-parse") is None for name in manager.adapters)
        # Route by metadata: a support conversation goes to lmdb and faiss only, others to lmdb.
        conv = scope["MemoryItem"](id="c1", content="hi", memory_type=scope["MemoryType"].CONVERSATION,
                                   metadata={"channel": "support"})
        other = scope["MemoryItem"](id="c2", content="hi", memory_type=scope["MemoryType"].CONVERSATION,
                                    metadata={"channel": "ops"})
        manager.store(conv)
        manager.store(other)
        holders = {i: sorted(n for n, a in manager.adapters.items() if a.retrieve(i) is not None)
                   for i in ("c1", "c2")}
        assert holders == {"c1": ["faiss", "lmdb"], "c2": ["lmdb"]}
        # The SyncManager and QueryRouter sections continue from the routing example's manager.
        for block in _python_blocks("operating.md"):
            if block.startswith(("from memsys.application.sync", "from memsys.application.query_router")):
                exec(compile(block, "docs/operating.md", "exec"), scope)
        result = scope["result"]
        assert result.complete and result.hits and all(hit.sources for hit in result.hits)
        assert scope["sync"].queue_depth() == 0
    finally:
        manager.close()


def test_adapters_guide_import_block_names_only_exported_helpers() -> None:
    block = _python_blocks("adapters.md")[0]
    names = re.findall(r"\b([A-Za-z_][A-Za-z0-9_]*)\b", block.split("import", 1)[1])
    missing = [n for n in names if not hasattr(base, n)]
    assert names and not missing, f"docs/adapters.md names helpers memsys.adapters.base lacks: {missing}"
    # And the prose: the names the guide's tables and steps mention by `code`.
    for name in ("ERRORS", "evaluate_query", "validate_item", "check_id", "check_json", "os_error",
                 "PathLock", "Journal", "decode_item", "encode_op", "decode_op", "atomic_write"):
        assert name in base.__all__, name
    assert os.path.exists(DOCS.parent / "examples" / "jsonfile_store.py")
