"""Leak checks for stores: open files, threads, Python heap and native (resident) memory.

The guide's troubleshooting asks that a store be opened and closed many times without
the process growing. Python's heap alone says little here: the engines (LMDB, DuckDB,
Kuzu, FAISS, Chroma) allocate in C, C++ and Rust, which only resident memory shows.
So a probe runs a *cycle* (open, write, read, close) in a fresh child process, where
no other test's memory moves the numbers:

    from memsys.testing.leaks import LeakProbe, StoreCycle

    with LeakProbe(StoreCycle(MyStore, folder)) as probe:
        probe.warm_up(4)                  # first opens load the engine and its caches
        report = probe.measure(16)        # resident memory sampled after each cycle
    report.check(max_growth_per_cycle=512 << 10)   # raises LeakError naming what grew

Resident memory is judged by its growth per cycle (the least-squares slope of the
samples), not by first-against-last: one allocator step in the middle moves the slope
by about 1.5 x step / cycles, while a real leak moves it by its full size, every time.
Each sample follows a garbage collection and, on glibc, ``malloc_trim(0)``, so it
counts memory still in use rather than free lists the allocator kept. The child runs
with ``MALLOC_ARENA_MAX=1``: glibc otherwise gives new threads arenas of their own (up
to 8 per core), each keeping a few MiB for good; engines that start threads per open
(Chroma) then grow by 2.5 MiB steps for dozens of cycles: bounded, but a leak's shape.
One arena serves every thread, so a leak on any thread still shows.

``measure`` also compares open file descriptors and threads before and after the
measured cycles, and traces the Python heap (tracemalloc) over a few more cycles run
separately, since tracing inflates resident memory.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import gc
import json
import os
import pickle
import queue
import statistics
import subprocess
import sys
import tempfile
import threading
import tracemalloc
from collections.abc import Callable, Sequence
from typing import Any

#: A leak this big per cycle must fail; the default bound is half of it.
MIB = 1 << 20
DEFAULT_MAX_GROWTH_PER_CYCLE = 512 << 10
DEFAULT_MAX_TRACED_GROWTH = 1 * MIB
_REPLY = "MEMSYS-LEAK "


class LeakError(AssertionError):
    """A leak check failed; the message names what grew and by how much."""


# ------------------------------------------------------------------ measuring

def resident_bytes() -> int:
    """This process's resident set size in bytes (psutil when installed, else /proc/self/statm)."""
    try:
        import psutil
    except ImportError:
        psutil = None
    if psutil is not None:
        return int(psutil.Process().memory_info().rss)
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError as exc:
        raise RuntimeError("cannot measure resident memory here: install psutil") from exc


def open_fds() -> int:
    """How many file descriptors this process holds."""
    with contextlib.suppress(OSError):
        return len(os.listdir("/proc/self/fd"))
    import psutil  # no /proc: psutil knows the platform's way

    return int(psutil.Process().num_fds())


def _release_free_memory() -> None:
    """Collect garbage and hand freed heap back to the OS (glibc), so RSS counts live memory."""
    gc.collect()
    with contextlib.suppress(Exception):  # not glibc: RSS then includes free lists; the slope copes
        import ctypes

        ctypes.CDLL(None).malloc_trim(0)


def growth_per_cycle(samples: Sequence[float]) -> float:
    """The least-squares slope of ``samples`` (one per cycle): their growth per cycle."""
    if len(samples) < 2:
        raise ValueError("growth per cycle needs at least two samples")
    if len(set(samples)) == 1:
        return 0.0
    return statistics.linear_regression(range(len(samples)), samples).slope


@dataclasses.dataclass(frozen=True)
class LeakReport:
    """What ``count`` measured cycles did to the process."""

    #: Resident bytes after each measured cycle.
    resident: tuple[int, ...]
    fds_before: int
    fds_after: int
    #: Names of threads alive after the cycles that were not alive before them.
    new_threads: tuple[str, ...]
    #: Python heap growth over the traced cycles (bytes), None when none were traced.
    traced_growth: int | None = None
    traced_cycles: int = 0

    @property
    def cycles(self) -> int:
        return len(self.resident)

    @property
    def per_cycle(self) -> float:
        """Resident growth per cycle in bytes (least-squares slope)."""
        return growth_per_cycle(self.resident)

    def problems(self, *, max_growth_per_cycle: float = DEFAULT_MAX_GROWTH_PER_CYCLE,
                 max_traced_growth: int = DEFAULT_MAX_TRACED_GROWTH) -> list[str]:
        found = []
        if self.fds_after > self.fds_before:
            found.append(f"{self.fds_after - self.fds_before} more open files after {self.cycles} cycles")
        if self.new_threads:
            found.append(f"threads left running: {list(self.new_threads)}")
        if self.traced_growth is not None and self.traced_growth >= max_traced_growth:
            found.append(f"the Python heap grew by {self.traced_growth} bytes over {self.traced_cycles} cycles "
                         f"(bound {max_traced_growth})")
        if self.per_cycle >= max_growth_per_cycle:
            found.append(f"resident memory grew by {self.per_cycle / 1024:.0f} KiB per cycle over {self.cycles} "
                         f"cycles (bound {max_growth_per_cycle / 1024:.0f} KiB); {self.summary()}")
        return found

    def check(self, **bounds: Any) -> LeakReport:
        """Raise LeakError naming every problem; return the report when there is none."""
        found = self.problems(**bounds)
        if found:
            raise LeakError("; ".join(found))
        return self

    def summary(self) -> str:
        first = self.resident[0]
        return (f"resident {first / MIB:.1f} MiB at start, per-cycle growth {self.per_cycle / 1024:+.1f} KiB, "
                f"samples (KiB from start) {[(r - first) >> 10 for r in self.resident]}")


def warm_up(cycle: Callable[[int], Any], count: int) -> None:
    """Run ``count`` cycles whose growth is not judged: first opens load engines and caches once."""
    for n in range(count):
        cycle(n)


def measure(cycle: Callable[[int], Any], count: int, *, traced_cycles: int = 0, start: int = 0) -> LeakReport:
    """Run ``count`` cycles sampling resident memory after each, then ``traced_cycles`` more under tracemalloc.

    In-process; prefer LeakProbe, whose fresh child holds nothing else. ``start`` numbers the
    first cycle (cycles after a warm-up go on from its count)."""
    if count < 2:
        raise ValueError("measure needs at least two cycles to see a growth per cycle")
    _release_free_memory()
    fds, threads = open_fds(), {t.ident for t in threading.enumerate()}
    resident = []  # after cycles only: a sample before the first would compare trimmed with in-use memory
    for n in range(start, start + count):
        cycle(n)
        _release_free_memory()
        resident.append(resident_bytes())
    fds_after = open_fds()
    new_threads = tuple(sorted(t.name for t in threading.enumerate() if t.ident not in threads))
    traced = None
    if traced_cycles:
        # After the resident samples: tracing costs memory of its own, proportional to what is traced.
        tracemalloc.start()
        try:
            gc.collect()
            before = tracemalloc.get_traced_memory()[0]
            for n in range(start + count, start + count + traced_cycles):
                cycle(n)
            gc.collect()
            traced = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
    return LeakReport(tuple(resident), fds, fds_after, new_threads, traced, traced_cycles)


# ------------------------------------------------------------------ a store's cycle

@dataclasses.dataclass(frozen=True)
class StoreCycle:
    """One open, write, read-back, close of the store ``opener(path)`` builds under ``folder``.

    Picklable when ``opener`` is (a class, a module-level function, functools.partial of one,
    or memsys.testing.verify.AdapterTarget), so a LeakProbe's child can run it."""

    opener: Callable[[str], Any]
    folder: str
    name: str = "store"

    def __call__(self, n: int) -> None:
        from memsys.domain.model import MemoryItem, MemoryType

        item_id, content = f"leak-cycle-{n % 4}", f"cycle {n}"  # a few ids, overwritten: the data stays small
        os.makedirs(self.folder, exist_ok=True)  # stores that expect their parent folder to exist
        store = self.opener(os.path.join(self.folder, self.name))
        try:
            store.store(MemoryItem(id=item_id, content=content, memory_type=MemoryType.KNOWLEDGE))
            got = store.retrieve(item_id)
            if got is None or got.content != content:
                raise AssertionError(f"cycle {n}: read back {got!r} after storing {content!r}")
        finally:
            store.close()


# ------------------------------------------------------------------ in a fresh child process

class LeakProbe:
    """A fresh Python process that runs ``cycle`` on request and reports what it did to itself.

    ``cycle`` is pickled to the child, which gets this process's import path. ``env`` adds to
    the child's environment (MALLOC_ARENA_MAX=1 unless given). Use as a context manager."""

    def __init__(self, cycle: Callable[[int], Any], *, timeout: float = 120.0,
                 env: dict[str, str] | None = None) -> None:
        self.timeout = timeout
        self.done = 0
        paths = [p for p in sys.path if p] + [os.getcwd()]
        child_env = dict(os.environ, MALLOC_ARENA_MAX="1", PYTHONPATH=os.pathsep.join(paths))
        child_env.update(env or {})
        self._stderr = tempfile.TemporaryFile()  # a file, not a pipe: a chatty child never blocks on it
        self._proc = subprocess.Popen(
            [sys.executable, "-c", "from memsys.testing.leaks import _serve; _serve()"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr, text=True, env=child_env)
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, name="leak-probe-reader", daemon=True).start()
        self._ask({"cycle": base64.b64encode(pickle.dumps(cycle)).decode("ascii")})

    def _read(self) -> None:
        for line in self._proc.stdout:
            if line.startswith(_REPLY):
                self._lines.put(line[len(_REPLY):])
        self._lines.put(None)

    def _ask(self, request: dict[str, Any]) -> dict[str, Any]:
        try:
            self._proc.stdin.write(json.dumps(request) + "\n")
            self._proc.stdin.flush()
            line = self._lines.get(timeout=self.timeout)
        except (OSError, queue.Empty) as exc:
            self._proc.kill()  # it may be stuck in a cycle: a probe never outlives its deadline
            tail = self._tail()
            self.close()
            raise LeakError(f"the leak probe's child did not answer {request.get('op', 'start')} within "
                            f"{self.timeout:g} s ({exc!r}); its stderr: {tail}") from exc
        if line is None:
            self._proc.wait()
            tail = self._tail()
            self.close()
            raise LeakError(f"the leak probe's child died (exit {self._proc.returncode}); its stderr: {tail}")
        reply = json.loads(line)
        if "error" in reply:
            raise LeakError(f"a cycle failed in the leak probe's child: {reply['error']}")
        return reply

    def _tail(self) -> str:
        with contextlib.suppress(OSError, ValueError):
            self._stderr.seek(0)
            return self._stderr.read()[-3000:].decode("utf-8", "replace")
        return ""

    def warm_up(self, count: int) -> None:
        """Run ``count`` cycles whose growth is not judged."""
        self._ask({"op": "warm_up", "count": count, "start": self.done})
        self.done += count

    def measure(self, count: int, *, traced_cycles: int = 0) -> LeakReport:
        """Run ``count`` sampled cycles, then ``traced_cycles`` traced ones; see ``measure``."""
        reply = self._ask({"op": "measure", "count": count, "traced_cycles": traced_cycles, "start": self.done})
        self.done += count + traced_cycles
        return LeakReport(tuple(reply["resident"]), reply["fds_before"], reply["fds_after"],
                          tuple(reply["new_threads"]), reply["traced_growth"], reply["traced_cycles"])

    def close(self) -> None:
        if self._proc.poll() is None:
            with contextlib.suppress(OSError):
                self._proc.stdin.close()
            try:
                self._proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        with contextlib.suppress(OSError):
            self._proc.stdout.close()
        self._stderr.close()

    def __enter__(self) -> LeakProbe:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _serve() -> None:
    """The child's loop: one JSON request a line on stdin, one reply a line on stdout."""
    # Replies get a descriptor of their own; fd 1 (and sys.stdout) go to stderr, so nothing an
    # engine prints, natively or not, can land inside a reply line.
    out = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    def reply(payload: dict[str, Any]) -> None:
        out.write(_REPLY + json.dumps(payload) + "\n")
        out.flush()

    cycle: Callable[[int], Any] | None = None
    for line in sys.stdin:
        request = json.loads(line)
        try:
            if cycle is None:
                cycle = pickle.loads(base64.b64decode(request["cycle"]))
                reply({"ready": os.getpid()})
            elif request["op"] == "warm_up":
                warm_up(lambda n: cycle(n + request["start"]), request["count"])
                reply({"warmed": request["count"]})
            else:
                reply(dataclasses.asdict(measure(cycle, request["count"], traced_cycles=request["traced_cycles"],
                                                 start=request["start"])))
        except Exception as exc:  # the parent raises it as a LeakError
            import traceback

            reply({"error": f"{type(exc).__name__}: {exc}\n{traceback.format_exc()[-2000:]}"})
