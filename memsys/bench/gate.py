"""``memsys bench gate --base REF``: does HEAD run memsys' hot paths slower than REF?

The base commit is checked out beside HEAD (a git worktree in a temporary folder). Each side
runs in its own worker process whose PYTHONPATH is its checkout (the installed backends are
shared), both running the same benchmark code (memsys/bench/workloads.py of the running gate).
For every benchmark the gate first finds a batch size that costs a few milliseconds of CPU,
then runs blocks: each block builds fresh stores on both sides and runs rounds, A B B A or
B A A B (alternating), the faster of each side's two batches taken, one log ratio per round.
Blocks are added until the ratio's t-interval over blocks settles the question (clearly under
the threshold and tight, or clearly over it) or the time budget is spent. Why blocks and CPU
time: see memsys.bench.stats and memsys/bench/_worker.py.

A benchmark fails the gate only when the LOW end of its interval is slower than 1 + threshold:
a regression beyond the threshold and outside the noise measured in this very run. Absolute
times are reported, never compared across runs.

Exit status: 0 nothing regressed, 1 a regression (or a benchmark HEAD can no longer run),
2 the gate could not run (unknown ref, a worker that would not start).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import json
import math
import os
import platform
import queue
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TextIO

from memsys.bench.stats import Interval, block_interval, block_ratio, verdict

HERE = Path(__file__).resolve().parent
WORKER = HERE / "_worker.py"
WORKLOADS = HERE / "workloads.py"


class GateError(Exception):
    """The gate could not run (exit status 2)."""


@dataclasses.dataclass(frozen=True)
class Dose:
    batch_seconds: float  # CPU time one timed batch should take
    min_blocks: int  # blocks every benchmark gets, whatever the budget
    rounds_per_block: int
    max_blocks: int
    budget: float  # seconds of measuring after which no more blocks are added
    precision: float  # interval half-width (log) at which an "ok" benchmark needs no more blocks
    #: A regression counts only once seen over this many blocks: stopping at the first interval that
    #: happens to clear the threshold would turn luck into failures. Confirming may overrun the budget.
    confirm_blocks: int


QUICK = Dose(batch_seconds=0.002, min_blocks=4, rounds_per_block=1, max_blocks=24, budget=60.0, precision=0.15,
             confirm_blocks=6)
FULL = Dose(batch_seconds=0.01, min_blocks=8, rounds_per_block=2, max_blocks=80, budget=600.0, precision=0.04,
            confirm_blocks=10)


# --- checkouts


def _git(repo: Path, *args: str) -> str:
    try:
        done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=120)
    except FileNotFoundError as exc:
        raise GateError("git is not installed") from exc
    if done.returncode:
        raise GateError(f"git {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout.strip()


@dataclasses.dataclass
class Checkout:
    label: str
    ref: str
    commit: str
    root: Path
    worktree: bool = False
    dirty: bool = False

    def describe(self) -> dict[str, Any]:
        return {"label": self.label, "ref": self.ref, "commit": self.commit, "path": str(self.root),
                "dirty": self.dirty}


def repo_root(start: Path | None = None) -> Path:
    return Path(_git(start or Path.cwd(), "rev-parse", "--show-toplevel"))


def checkout(repo: Path, ref: str, label: str, into: Path) -> Checkout:
    commit = _git(repo, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
    folder = into / label
    _git(repo, "worktree", "add", "--detach", "--quiet", str(folder), commit)
    return Checkout(label, ref, commit, folder, worktree=True)


def working_tree(repo: Path) -> Checkout:
    commit = _git(repo, "rev-parse", "HEAD")
    dirty = bool(_git(repo, "status", "--porcelain", "--untracked-files=no", "--", "memsys"))
    return Checkout("head", "working tree", commit, repo, dirty=dirty)


def remove_checkout(repo: Path, co: Checkout) -> None:
    if not co.worktree:
        return
    subprocess.run(["git", "-C", str(repo), "worktree", "remove", "--force", str(co.root)],
                   capture_output=True, timeout=120)
    shutil.rmtree(co.root, ignore_errors=True)
    subprocess.run(["git", "-C", str(repo), "worktree", "prune"], capture_output=True, timeout=120)


# --- workers


class WorkerDied(Exception):
    pass


class Worker:
    """One side's benchmark process (memsys/bench/_worker.py with the checkout on PYTHONPATH)."""

    def __init__(self, co: Checkout, slowdown: str, scratch: Path, timeout: float = 180.0) -> None:
        self.checkout, self.timeout = co, timeout
        # Coverage's subprocess hooks would trace only the side whose files match its source
        # (HEAD's checkout) and make it look several times slower: workers are never traced.
        env = {k: v for k, v in os.environ.items() if k not in ("MEMSYS_BENCH_SLOWDOWN", "PYTHONPATH",
                                                                 "COVERAGE_PROCESS_START")
               and not k.startswith("COV_CORE_")}
        env["PYTHONPATH"] = str(co.root)
        env["PYTHONHASHSEED"] = "0"  # both sides lay out their dicts and sets the same way
        # OpenMP and BLAS helper threads (FAISS, numpy) spin while idle, and a spinning thread's CPU
        # lands in whatever is timed next: measured, it swung FAISS searches 0.03x-2.8x between two
        # identical sides. One thread each; a caller's own setting wins.
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            env.setdefault(var, "1")
        if slowdown:
            env["MEMSYS_BENCH_SLOWDOWN"] = slowdown
        self.stderr = tempfile.TemporaryFile(mode="w+")
        workdir = scratch / co.label
        workdir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen([sys.executable, "-P", str(WORKER), str(WORKLOADS)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self.stderr, text=True, env=env,
                                     cwd=str(workdir), bufsize=1)
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()
        hello = self._read(120.0)
        imported = Path(hello.get("memsys", "")).resolve()
        if imported.parent != co.root.resolve():
            self.close()
            raise GateError(f"the {co.label} worker imported memsys from {imported}, not from {co.root}")

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def _read(self, timeout: float) -> dict[str, Any]:
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            self.proc.kill()
            raise WorkerDied(f"the {self.checkout.label} worker did not answer within {timeout:.0f} s") from None
        if line is None:
            self.proc.wait(timeout=10)
            raise WorkerDied(f"the {self.checkout.label} worker exited with status {self.proc.returncode}: "
                             f"{self.tail()}")
        return json.loads(line)

    def tail(self) -> str:
        self.stderr.seek(0)
        return self.stderr.read()[-2000:].strip()

    def send(self, request: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(json.dumps(request) + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            pass  # _read reports how it died

    def receive(self) -> dict[str, Any]:
        return self._read(self.timeout)

    def run(self, bench: str, n: int) -> dict[str, Any]:
        self.send({"cmd": "run", "bench": bench, "n": n})
        return self.receive()

    def close(self) -> None:
        try:
            if self.proc.poll() is None and self.proc.stdin is not None:
                self.proc.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
                self.proc.stdin.flush()
                self.proc.wait(timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            pass
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.stderr.close()


# --- measurement


METRICS = ("cpu", "wall")


@dataclasses.dataclass
class Result:
    name: str
    fixture: str
    metric: str = "cpu"
    n: int = 0
    #: Per metric, one log(HEAD time / base time) per block (see memsys.bench.stats).
    blocks: dict[str, list[float]] = dataclasses.field(default_factory=lambda: {m: [] for m in METRICS})
    #: Per block: every batch's seconds per op, by side and metric, in the order run.
    samples: list[dict[str, dict[str, list[float]]]] = dataclasses.field(default_factory=list)
    error_head: str = ""
    error_base: str = ""
    intervals: dict[str, Interval] = dataclasses.field(default_factory=dict)
    verdict: str = "not measured"

    @property
    def interval(self) -> Interval | None:
        return self.intervals.get(self.metric)

    @property
    def n_blocks(self) -> int:
        return len(self.blocks[self.metric])

    @property
    def errored(self) -> bool:
        return bool(self.error_head or self.error_base)

    @property
    def failed(self) -> bool:
        return self.verdict in ("regression", "broken on HEAD")

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "verdict": self.verdict, "metric": self.metric,
                               "ops_per_batch": self.n, "blocks": self.n_blocks,
                               "error_head": self.error_head, "error_base": self.error_base}
        for metric in METRICS:
            iv = self.intervals.get(metric)
            out[metric] = {"ratio": iv.ratio if iv else None, "low": iv.low if iv else None,
                           "high": iv.high if iv else None,
                           "head_seconds_per_op": _median([min(b["head"][metric]) for b in self.samples]),
                           "base_seconds_per_op": _median([min(b["base"][metric]) for b in self.samples]),
                           "block_log_ratios": self.blocks[metric]}
        out["samples"] = self.samples
        return out


def _median(values: Sequence[float]) -> float | None:
    return sorted(values)[len(values) // 2] if values else None


class Gate:
    """Blocks of ABBA rounds; each block on fresh stores on both sides (see memsys.bench.stats)."""

    def __init__(self, head: Worker, base: Worker, dose: Dose, threshold: float, confidence: float,
                 out: TextIO, metric: str = "cpu", max_seconds: float | None = None) -> None:
        self.head, self.base, self.dose = head, base, dose
        self.threshold, self.confidence, self.out, self.metric = threshold, confidence, out, metric
        #: A hard wall-clock limit (CI): past it no block starts, not even a benchmark's minimum
        #: dose or a suspect's confirmation; what was measured by then is judged as it stands.
        self.max_seconds = max_seconds
        self.started = time.monotonic()
        self.cut_short = False
        self.rounds_run = 0
        self.spent = {"fresh stores": 0.0, "timing": 0.0}  # wall seconds, reported

    def _both(self, result: Result, n: int, head_first: bool) -> dict[str, dict[str, float]] | None:
        order = [(self.head, "head"), (self.base, "base")]
        if not head_first:
            order.reverse()
        times: dict[str, dict[str, float]] = {}
        for worker, side in order:
            answer = worker.run(result.name, n)
            if "error" in answer:
                setattr(result, f"error_{side}", answer["error"])
                return None
            times[side] = answer
        return times

    def calibrate(self, result: Result) -> bool:
        """Choose ops per batch so one batch costs ``batch_seconds`` of CPU. Both sides run every
        trial batch, so their stores keep the same history; the very first ops (lazy imports,
        first transactions, cold caches) run but do not count."""
        per_op = math.inf
        for _ in range(3):
            trial = self._both(result, 1, head_first=True)
            if trial is None:
                return False
            per_op = min(per_op, trial["head"]["cpu"], trial["base"]["cpu"])
        n = 1
        for _ in range(4):
            n = max(1, min(1 << 16, math.ceil(self.dose.batch_seconds / max(per_op, 1e-7))))
            trial = self._both(result, n, head_first=True)
            if trial is None:
                return False
            spent = min(trial["head"]["cpu"], trial["base"]["cpu"])
            if spent >= self.dose.batch_seconds * 0.6 or n >= 1 << 16:
                break
            per_op = spent / n
        result.n = n
        return True

    def round(self, result: Result, block: dict[str, dict[str, list[float]]]) -> bool:
        """One ABBA (or BAAB) round: two batches a side, recorded as seconds per op."""
        head_first = self.rounds_run % 2 == 0
        self.rounds_run += 1
        for order in (head_first, not head_first):
            times = self._both(result, result.n, order)
            if times is None:
                return False
            for side in ("head", "base"):
                for metric in METRICS:
                    block[side][metric].append(times[side][metric] / result.n)
        return True

    def block(self, fixture: str, results: Sequence[Result]) -> None:
        """Fresh ``fixture`` stores on both sides, then rounds of each benchmark on them, in order
        (reads first: they see only the preloaded items)."""
        started = time.monotonic()
        for worker in (self.head, self.base):  # both rebuild at once: setup is not what is measured
            worker.send({"cmd": "reset", "fixture": fixture})
        for worker in (self.head, self.base):
            worker.receive()
        self.spent["fresh stores"] += time.monotonic() - started
        started = time.monotonic()
        for result in results:
            if result.errored or (result.n == 0 and not self.calibrate(result)):
                continue
            # No warm-up batch: a block compares fastest batches, and a cold first one is never that.
            block = {side: {m: [] for m in METRICS} for side in ("head", "base")}
            complete = all(self.round(result, block) for _ in range(self.dose.rounds_per_block))
            if complete:
                result.samples.append(block)
                for metric in METRICS:
                    result.blocks[metric].append(block_ratio(block["head"][metric], block["base"][metric]))
        self.spent["timing"] += time.monotonic() - started

    def judge(self, result: Result) -> None:
        if result.error_head and not result.error_base:
            result.verdict = "broken on HEAD"
        elif result.errored:
            result.verdict = "skipped"
        else:
            rounds = self.dose.rounds_per_block * result.n_blocks
            result.intervals = {m: block_interval(result.blocks[m], self.confidence, rounds) for m in METRICS}
            result.verdict = verdict(result.intervals[self.metric], self.threshold)
            if result.verdict == "regression" and result.n_blocks < self.dose.confirm_blocks:
                result.verdict = "suspect"  # over the threshold so far; more blocks decide

    def settled(self, result: Result) -> bool:
        if result.errored or result.n_blocks >= self.dose.max_blocks:
            return True
        self.judge(result)
        iv = result.interval
        return result.verdict in ("regression", "faster") or (
            result.verdict == "ok" and iv is not None and iv.half_width <= self.dose.precision)

    def out_of_time(self) -> bool:
        if self.max_seconds is not None and time.monotonic() - self.started >= self.max_seconds:
            self.cut_short = True
        return self.cut_short

    def measure(self, names: Sequence[str]) -> list[Result]:
        from memsys.bench.workloads import BENCHMARKS

        started = time.monotonic()
        results = [Result(name, BENCHMARKS[name].fixture, self.metric) for name in names]
        groups: dict[str, list[Result]] = {}
        for result in results:
            groups.setdefault(result.fixture, []).append(result)
        # Every benchmark gets its minimum dose, whatever the budget; block by block across the
        # fixtures, so a hard time limit leaves every benchmark with about as many blocks.
        for _ in range(self.dose.min_blocks):
            for fixture, members in groups.items():
                if self.out_of_time():
                    break
                self.block(fixture, members)
        for result in results:
            self.judge(result)
            self.out.write(f"  {result.name:<24}{self.line(result)}\n")
        self.out.flush()
        # Then the budget goes to whatever is not settled yet, one more block at a time; suspects
        # first, and they are confirmed or cleared even past the budget (at most max_blocks each).
        extended: list[Result] = []
        while True:
            pending = [r for r in results if not self.settled(r)]
            over = time.monotonic() - started >= self.dose.budget
            if over:
                pending = [r for r in pending if r.verdict == "suspect"]
            if not pending or self.out_of_time():
                break
            pending.sort(key=lambda r: r.verdict != "suspect")
            for fixture in dict.fromkeys(r.fixture for r in pending):
                self.block(fixture, [r for r in pending if r.fixture == fixture])
                if self.out_of_time() or (not over and time.monotonic() - started >= self.dose.budget):
                    break
            extended += [r for r in pending if r not in extended]
        for result in results:
            self.judge(result)
        if extended:
            self.out.write("  after more blocks:\n")
            for result in extended:
                self.out.write(f"  {result.name:<24}{self.line(result)}\n")
        if self.cut_short:
            short = [r.name for r in results if not r.errored and r.n_blocks < self.dose.min_blocks]
            suspects = [r.name for r in results if r.verdict == "suspect"]
            self.out.write("  stopped at the time limit (--max-seconds)"
                           + (f"; under the minimum {self.dose.min_blocks} blocks: {', '.join(short)}" if short else "")
                           + (f"; unconfirmed suspects (not failed): {', '.join(suspects)}" if suspects else "")
                           + "\n")
        return results

    @staticmethod
    def line(result: Result) -> str:
        if result.verdict in ("skipped", "broken on HEAD"):
            return f"{result.verdict}: head {result.error_head or 'ok'}; base {result.error_base or 'ok'}"
        iv = result.interval
        if iv is None or not iv.blocks:
            return result.verdict
        other = result.intervals.get("wall" if result.metric == "cpu" else "cpu")
        extra = f"   ({'wall' if result.metric == 'cpu' else 'cpu'} {other.ratio:.2f})" if other else ""
        return f"{iv.ratio:6.3f}  [{iv.low:6.3f}, {iv.high:6.3f}]  {iv.blocks:>2}x{iv.rounds // iv.blocks:<2} " \
               f"{result.verdict}{extra}"


def select(patterns: Sequence[str] | None) -> list[str]:
    from memsys.bench.workloads import BENCHMARKS

    if not patterns:
        return list(BENCHMARKS)
    wanted = [p.strip() for group in patterns for p in group.split(",") if p.strip()]
    chosen = [name for name in BENCHMARKS if any(fnmatch.fnmatchcase(name, p) for p in wanted)]
    unknown = [p for p in wanted if not any(fnmatch.fnmatchcase(name, p) for name in BENCHMARKS)]
    if unknown:
        raise GateError(f"no benchmark matches {unknown}; known: {', '.join(BENCHMARKS)}")
    return chosen


def machine() -> dict[str, Any]:
    try:
        load = os.getloadavg()[0]
    except OSError:  # pragma: no cover - not on Linux
        load = None
    return {"host": socket.gethostname(), "cpus": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version(), "load_1min": load}


def run_gate(base: str, *, head: str | None = None, quick: bool = False, threshold: float = 0.15,
             confidence: float = 0.95, budget: float | None = None, only: Sequence[str] | None = None,
             json_path: str | None = None, slowdown: str | None = None, repo: str | None = None,
             metric: str = "cpu", dose: Dose | None = None, max_seconds: float | None = None,
             out: TextIO = sys.stdout) -> int:
    if not 0 < threshold < 10:
        raise GateError(f"--threshold must be a fraction such as 0.15, got {threshold}")
    if not 0.5 <= confidence < 1:
        raise GateError(f"--confidence must be in [0.5, 1), got {confidence}")
    if metric not in METRICS:
        raise GateError(f"--metric must be one of {METRICS}, got {metric!r}")
    if max_seconds is not None and not max_seconds > 0:
        raise GateError(f"--max-seconds must be positive, got {max_seconds}")
    dose = dose or (QUICK if quick else FULL)
    if budget is not None:
        dose = dataclasses.replace(dose, budget=budget)
    names = select(only)
    # The slowed side is HEAD: the flag, or the environment variable the tests set, never both sides.
    slowdown = slowdown if slowdown is not None else os.environ.get("MEMSYS_BENCH_SLOWDOWN", "")
    if slowdown:
        from memsys.bench._worker import parse_slowdown

        try:
            parse_slowdown(slowdown)
        except ValueError as exc:
            raise GateError(str(exc)) from exc
    root = repo_root(Path(repo) if repo else None)
    scratch = Path(tempfile.mkdtemp(prefix="memsys-bench-gate-"))
    checkouts: list[Checkout] = []
    workers: list[Worker] = []
    started = time.monotonic()
    try:
        base_co = checkout(root, base, "base", scratch)
        checkouts.append(base_co)
        head_co = checkout(root, head, "head", scratch) if head else working_tree(root)
        checkouts.append(head_co)
        out.write(f"memsys bench gate: HEAD {head_co.ref} {head_co.commit[:10]}{' (modified)' if head_co.dirty else ''}"
                  f" vs base {base} {base_co.commit[:10]}; threshold +{threshold:.0%}, {confidence:.0%} interval, "
                  f"{'quick' if quick else 'full'} dose, budget {dose.budget:.0f} s"
                  + (f", hard limit {max_seconds:.0f} s" if max_seconds else "") + f", gating on {metric} time\n")
        if slowdown:
            out.write(f"  HEAD deliberately slowed: {slowdown}\n")
        out.write(f"  {'benchmark':<24}{'ratio':>6}  {'interval':^18}  blocks verdict"
                  f"  (ratio = HEAD {metric} time / base {metric} time)\n")
        try:
            head_w = Worker(head_co, slowdown, scratch)
            workers.append(head_w)
            base_w = Worker(base_co, "", scratch)
            workers.append(base_w)
            # The hard limit counts from the gate's start: checkouts and worker start-up included.
            left = None if max_seconds is None else max(0.0, max_seconds - (time.monotonic() - started))
            gate = Gate(head_w, base_w, dose, threshold, confidence, out, metric, max_seconds=left)
            results = gate.measure(names)
        except WorkerDied as exc:
            raise GateError(str(exc)) from exc
    finally:
        for worker in workers:
            worker.close()
        for co in checkouts:
            remove_checkout(root, co)
        shutil.rmtree(scratch, ignore_errors=True)
    failed = [r for r in results if r.failed]
    code = 1 if failed else 0
    out.write(f"{len(results)} benchmarks in {time.monotonic() - started:.0f} s "
              f"({gate.spent['fresh stores']:.0f} s building stores, {gate.spent['timing']:.0f} s timing): ")
    if failed:
        out.write("REGRESSION in " + ", ".join(f"{r.name} ({r.verdict}"
                                               + (f", x{r.interval.ratio:.2f} [{r.interval.low:.2f}, "
                                                  f"{r.interval.high:.2f}]" if r.interval else "") + ")"
                                               for r in failed) + "\n")
    else:
        out.write(f"no regression beyond +{threshold:.0%} outside the noise\n")
    if json_path:
        document = {"tool": "memsys bench gate", "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    "machine": machine(), "threshold": threshold, "confidence": confidence,
                    "seconds": {"total": time.monotonic() - started, **gate.spent},
                    "dose": dataclasses.asdict(dose), "quick": quick, "slowdown": slowdown, "metric": metric,
                    "max_seconds": max_seconds, "cut_short": gate.cut_short,
                    "head": head_co.describe(), "base": base_co.describe(),
                    "benchmarks": [r.to_dict() for r in results], "regressions": [r.name for r in failed],
                    "exit_code": code}
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(json.dumps(document, indent=1))
    return code
