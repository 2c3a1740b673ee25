"""One side of the gate: a process whose ``memsys`` is one checkout's, answering timing requests.

Started by memsys.bench.gate as ``python -P THIS_FILE WORKLOADS_FILE`` with PYTHONPATH set to the
checkout, so ``import memsys`` resolves there (``-P`` keeps this file's folder off sys.path). It
reads one JSON request a line on stdin and answers one JSON line on stdout:

    {"cmd": "run", "bench": "lmdb.retrieve", "n": 200}  ->  {"cpu": 0.0040, "wall": 0.0043}
    {"cmd": "reset", "fixture": "kuzu"}  ->  {"reset": true}   (fresh stores, built now)
    {"cmd": "quit"}

"cpu" is the process's CPU time (every thread, user and system) over the timed region, "wall"
its elapsed time. On a shared, loaded machine the time a process waits for a core is charged to
wall time only, so CPU time is the figure that can be compared at all.

``MEMSYS_BENCH_SLOWDOWN="lmdb.retrieve=1.3,..."`` (given to one side only by the gate, for tests
and demonstrations) stretches that benchmark's timed region by spinning until it has used the
factor times its real CPU time: a deliberately slowed build without touching memsys' code.
"""

from __future__ import annotations

import gc
import importlib.util
import json
import os
import sys
import time
import traceback
from collections.abc import Iterable
from typing import Any, TextIO


def _stop_coverage() -> None:
    """Coverage's subprocess patch starts tracing in every child of a measured run, whatever the
    environment the gate hands over, and it traces only the side whose files match its source:
    measured in CI, HEAD came out 1.2-2x slower than an identical base. Timing is never traced."""
    coverage = sys.modules.get("coverage")
    current = coverage.Coverage.current() if coverage is not None else None
    if current is not None:
        current.stop()
    sys.settrace(None)


def parse_slowdown(text: str) -> dict[str, float]:
    factors: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, value = part.partition("=")
        try:
            factor = float(value)
        except ValueError:
            factor = 0.0
        if not name.strip() or not factor >= 1.0:
            raise ValueError(f"bad MEMSYS_BENCH_SLOWDOWN entry {part!r}: want NAME=FACTOR with FACTOR >= 1")
        factors[name.strip()] = factor
    return factors


def load_workloads(path: str) -> Any:
    spec = importlib.util.spec_from_file_location("memsys_gate_workloads", path)
    workloads = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = workloads  # dataclasses look their module up while the file runs
    spec.loader.exec_module(workloads)
    return workloads


def serve(workloads: Any, requests: Iterable[str], out: TextIO, slowdown: dict[str, float]) -> None:
    """Answer ``requests`` (JSON lines) on ``out`` until "quit" or the end of the input."""
    import memsys

    fixtures = workloads.Fixtures()
    prepared: dict[str, tuple] = {}
    out.write(json.dumps({"ready": True, "memsys": os.path.dirname(os.path.abspath(memsys.__file__)),
                          "pid": os.getpid()}) + "\n")
    out.flush()
    try:
        for line in requests:
            request = json.loads(line)
            if request["cmd"] == "quit":
                break
            if request["cmd"] == "reset":  # this fixture afresh: new files, new engine state
                fixtures.drop(request["fixture"])
                for stale in [k for k in prepared if workloads.BENCHMARKS[k].fixture == request["fixture"]]:
                    del prepared[stale]
                try:
                    fixtures.get(request["fixture"])
                    gc.collect()
                    gc.freeze()
                    answer = {"reset": True}
                except Exception as exc:  # the benchmarks on it report the error when they run
                    answer = {"reset": False, "error": f"{type(exc).__name__}: {exc}"}
            else:
                answer = run(workloads, fixtures, prepared, request["bench"], int(request["n"]),
                             slowdown.get(request["bench"], 1.0))
            out.write(json.dumps(answer) + "\n")
            out.flush()
    finally:
        try:
            fixtures.close()
        except Exception:  # closing a store that failed mid-benchmark must not hide the answers already sent
            traceback.print_exc()


def run(workloads: Any, fixtures: Any, prepared: dict[str, tuple], name: str, n: int,
        factor: float) -> dict[str, Any]:
    """Time ``n`` ops of benchmark ``name``: CPU and wall seconds, or the error it raised."""
    try:
        if name not in prepared:
            bench = workloads.BENCHMARKS[name]
            fresh = bench.fixture not in fixtures.opened
            prepared[name] = bench.make(fixtures.get(bench.fixture), fixtures)
            if fresh:
                # What setup left behind goes to the permanent generation, so a collection in a
                # timed region walks only what the benchmark itself allocates.
                gc.collect()
                gc.freeze()
        prepare, op = prepared[name]
        args = prepare(n)
        wall0, cpu0 = time.perf_counter(), time.process_time()
        for arg in args:
            op(arg)
        cpu = time.process_time() - cpu0
        if factor > 1.0:
            # Spin, not sleep: the stretch is real work in proportion to the work just done,
            # so it shows in CPU time and in wall time alike, whatever the machine's load.
            until = cpu0 + cpu * factor
            while time.process_time() < until:
                pass
            cpu = time.process_time() - cpu0
        return {"cpu": cpu, "wall": time.perf_counter() - wall0}
    except Exception as exc:  # reported per benchmark; the gate decides what it means
        return {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc(limit=6)}


def main() -> int:
    workloads = load_workloads(sys.argv[1])
    slowdown = parse_slowdown(os.environ.get("MEMSYS_BENCH_SLOWDOWN", ""))
    out = sys.stdout
    sys.stdout = sys.stderr  # whatever a store prints must not garble the protocol
    serve(workloads, sys.stdin, out, slowdown)
    return 0


if __name__ == "__main__":
    _stop_coverage()  # only as the worker process: the gate imports this module too
    sys.exit(main())
