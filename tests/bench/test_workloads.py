"""The gate's benchmark side in this process: the worker protocol, every micro-benchmark once, the
slow-down switch. (The gate runs the same code in worker processes, one per checkout.)"""

from __future__ import annotations

import io
import json

import pytest

from memsys.bench import _worker, workloads
from memsys.bench.gate import WORKLOADS


def converse(requests: list[dict], slowdown: str = "") -> list[dict]:
    out = io.StringIO()
    module = _worker.load_workloads(str(WORKLOADS))
    _worker.serve(module, [json.dumps(r) for r in requests], out, _worker.parse_slowdown(slowdown))
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_every_benchmark_runs_on_this_checkout_and_reports_cpu_and_wall_time() -> None:
    requests = [{"cmd": "reset", "fixture": "lmdb"}]  # built now; the others on their first run
    requests += [{"cmd": "run", "bench": name, "n": 2} for name in workloads.BENCHMARKS]
    answers = converse(requests + [{"cmd": "quit"}])
    hello, reset, replies = answers[0], answers[1], answers[2:]
    assert hello["ready"] and hello["memsys"].endswith("memsys") and reset == {"reset": True}
    assert len(replies) == len(workloads.BENCHMARKS)
    for name, timed in zip(workloads.BENCHMARKS, replies):
        assert set(timed) == {"cpu", "wall"} and timed["cpu"] > 0 and timed["wall"] > 0, (name, timed)


def test_errors_are_answers_and_the_slowdown_switch_is_parsed_strictly() -> None:
    answers = converse([{"cmd": "run", "bench": "no.such", "n": 1},
                        {"cmd": "run", "bench": "item.construct", "n": 50}], slowdown="item.construct=1.5")
    assert answers[1]["error"].startswith("KeyError")  # the gate turns this into "broken" or "skipped"
    assert answers[2]["cpu"] > 0
    assert _worker.parse_slowdown(" lmdb.retrieve=1.3 , kuzu.store=2 ") == {"lmdb.retrieve": 1.3, "kuzu.store": 2.0}
    for bad in ("lmdb.retrieve", "lmdb.retrieve=fast", "=1.5", "lmdb.retrieve=0.9"):
        with pytest.raises(ValueError, match="NAME=FACTOR"):
            _worker.parse_slowdown(bad)


def test_fixtures_are_rebuilt_in_a_new_folder_each_block() -> None:
    fixtures = workloads.Fixtures()
    try:
        first = fixtures.get("lmdb")
        folder = fixtures.folders["lmdb"]
        assert first.count() == workloads.PRELOAD
        fixtures.drop("lmdb")
        assert fixtures.get("lmdb") is not first and fixtures.folders["lmdb"] != folder
    finally:
        fixtures.close()
