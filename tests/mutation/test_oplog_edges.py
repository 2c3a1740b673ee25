"""The operation log at its edges: torn and damaged lines, the replay window's bounds, non-ASCII
content under any locale, and the errors it raises. Found unpinned by mutation testing."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from memsys import MemoryManager
from memsys.adapters.memory_store import InMemoryStore
from memsys.application.oplog import read_operations, replay
from memsys.domain.errors import CorruptStoreError, InvalidInputError
from memsys.testing import dump, sample_item


@pytest.fixture
def oplog(tmp_path):
    """An operation log of four committed writes (item-00000 .. item-00003), one per transaction."""
    path = tmp_path / "ops.jsonl"
    manager = MemoryManager({"a": InMemoryStore(dimension=8)}, transaction_log=tmp_path / "txlog",
                            operation_log=path)
    for i in range(4):
        manager.store(sample_item(i))
    manager.close()
    return path


def lsns(path) -> list[int]:
    return [r["lsn"] for r in read_operations(path)]


def test_replay_window_excludes_since_and_includes_until(oplog) -> None:
    order = lsns(oplog)
    fresh = {"a": InMemoryStore(dimension=8)}
    assert replay(oplog, fresh, since_lsn=order[0], until_lsn=order[2]) == 2
    assert sorted(dump(fresh["a"])) == ["item-00001", "item-00002"]
    assert replay(oplog, {"a": InMemoryStore(dimension=8)}, since_lsn=order[-1]) == 0


def test_replay_names_the_unknown_stores_it_was_asked_for(oplog) -> None:
    with pytest.raises(InvalidInputError, match=r"unknown stores \['ghost', 'z'\]"):
        replay(oplog, {"a": InMemoryStore(dimension=8)}, only=["a", "z", "ghost"])


def test_a_torn_last_line_is_skipped_but_a_damaged_complete_line_is_corruption(oplog) -> None:
    whole = oplog.read_bytes()
    oplog.write_bytes(whole + b'{"lsn": 99, "txid": "t", "op')  # a crash mid-append
    assert len(lsns(oplog)) == 4
    oplog.write_bytes(whole + b'{"lsn": 99, "txid": "t", "op\n')  # complete line, not JSON
    with pytest.raises(CorruptStoreError, match="line 5 is not a JSON record") as damaged:
        lsns(oplog)
    assert damaged.value.path == os.fspath(oplog)
    lines = whole.split(b"\n")
    oplog.write_bytes(lines[0] + b"\nnot json\n" + b"\n".join(lines[1:]))  # damage before the tail
    with pytest.raises(CorruptStoreError, match="line 2 "):
        lsns(oplog)


def test_non_ascii_content_round_trips_whatever_the_locale(tmp_path) -> None:
    # The log must be written and read as UTF-8 even where the locale's encoding is ASCII
    # (a server with LANG unset); run in a child with UTF-8 mode off and the C locale.
    script = textwrap.dedent(f"""
        from memsys import MemoryManager
        from memsys.adapters.memory_store import InMemoryStore
        from memsys.application.oplog import replay
        from memsys.testing import sample_item, dump
        item = sample_item(1).replace(content={{"text": "na\\u00efve \\u2603 \\u65e5\\u672c"}})
        m = MemoryManager({{"a": InMemoryStore(dimension=8)}}, transaction_log={str(tmp_path / 'txlog')!r},
                          operation_log={str(tmp_path / 'ops.jsonl')!r})
        m.store(item)
        m.close()
        fresh = {{"a": InMemoryStore(dimension=8)}}
        assert replay({str(tmp_path / 'ops.jsonl')!r}, fresh) == 1
        assert fresh["a"].retrieve(item.id).content == item.content, fresh["a"].retrieve(item.id).content
    """)
    env = {**os.environ, "LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0", "PYTHONIOENCODING": "utf-8"}
    done = subprocess.run([sys.executable, "-X", "utf8=0", "-c", script], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
