"""memsys.testing.leaks: the slope it judges, and a fresh child that sees real leaks of each kind.

The leaky cycles below are module-level so the probe's child can import them by name.
"""

from __future__ import annotations

import ctypes
import functools
import os
import threading

import pytest

from memsys.testing.leaks import (
    MIB,
    LeakError,
    LeakProbe,
    LeakReport,
    StoreCycle,
    growth_per_cycle,
    measure,
)

KIB = 1 << 10
_KEPT: list = []


def churn(n: int) -> None:
    """Allocates and frees 4 MiB, Python and native: busy, but no leak."""
    data = bytearray(b"\x01") * (4 * MIB)
    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    ptr = libc.malloc(4 * MIB)
    ctypes.memset(ptr, n % 256, 4 * MIB)
    libc.free(ctypes.c_void_p(ptr))
    del data


def leak_python(n: int) -> None:
    _KEPT.append(bytearray(b"\x01") * (2 * MIB))  # written, so its pages are resident


def leak_native(n: int) -> None:
    """1 MiB a cycle that only native code holds: invisible to tracemalloc."""
    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    ptr = libc.malloc(MIB)
    ctypes.memset(ptr, 1, MIB)
    _KEPT.append(ptr)


def leak_file(n: int) -> None:
    _KEPT.append(open(os.devnull, "rb"))  # noqa: SIM115 - the leak under test


def leak_thread(n: int) -> None:
    stop = threading.Event()
    _KEPT.append(stop)
    threading.Thread(target=stop.wait, name=f"left-behind-{n}", daemon=True).start()


def fail_on_third(n: int) -> None:
    if n == 2:
        raise ValueError("the store refused cycle 2")


def die(n: int) -> None:
    os.write(2, b"cycle says goodbye\n")
    os._exit(3)


def hang(n: int) -> None:
    threading.Event().wait(600)


def _probe(cycle, warm: int = 2, count: int = 12, traced: int = 4) -> LeakReport:
    with LeakProbe(cycle, timeout=60) as probe:
        probe.warm_up(warm)
        return probe.measure(count, traced_cycles=traced)


# ------------------------------------------------------------------ the slope

def test_growth_per_cycle_is_a_leaks_size_and_shrugs_off_one_allocator_step():
    base = 100 * MIB
    assert growth_per_cycle([base + n * MIB for n in range(16)]) == pytest.approx(MIB)
    assert growth_per_cycle([base] * 16) == 0.0
    # One 2.5 MiB step midway (a new arena, a cache filled once) moves the slope by ~1.5 x step / 16.
    step = [base + (5 * MIB // 2 if n >= 8 else 0) for n in range(16)]
    assert 0 < growth_per_cycle(step) < 256 * KIB
    with pytest.raises(ValueError):
        growth_per_cycle([base])


def test_a_report_names_every_problem():
    report = LeakReport(resident=tuple(100 * MIB + n * MIB for n in range(8)), fds_before=10, fds_after=12,
                        new_threads=("worker",), traced_growth=3 * MIB, traced_cycles=4)
    with pytest.raises(LeakError) as caught:
        report.check()
    message = str(caught.value)
    for part in ("2 more open files", "'worker'", "Python heap grew by 3145728 bytes", "1024 KiB per cycle"):
        assert part in message, message
    clean = LeakReport(resident=(100 * MIB,) * 8, fds_before=10, fds_after=10, new_threads=())
    assert clean.check() is clean and clean.cycles == 8


def test_measure_runs_in_process_too():
    report = measure(churn, 3, traced_cycles=2)
    assert report.cycles == 3 and report.traced_cycles == 2 and report.traced_growth is not None


# ------------------------------------------------------------------ in a fresh child

def test_busy_cycles_that_free_what_they_take_pass():
    report = _probe(churn)
    assert report.problems() == [], report.summary()


def test_a_python_leak_of_2_mib_a_cycle_fails_on_resident_and_traced_memory():
    report = _probe(leak_python)
    assert report.per_cycle > 1.5 * MIB, report.summary()
    assert report.traced_growth >= 4 * MIB
    with pytest.raises(LeakError, match="resident memory grew"):
        report.check()


def test_a_native_leak_of_1_mib_a_cycle_fails_though_tracemalloc_sees_nothing():
    report = _probe(leak_native)
    assert report.traced_growth < 64 * KIB  # why resident memory must be measured at all
    assert report.per_cycle > 0.9 * MIB, report.summary()
    with pytest.raises(LeakError, match="resident memory grew"):
        report.check()


def test_a_file_left_open_each_cycle_fails():
    report = _probe(leak_file, traced=0)
    assert report.fds_after - report.fds_before == 12
    with pytest.raises(LeakError, match="12 more open files"):
        report.check()


def test_a_thread_left_running_each_cycle_fails():
    report = _probe(leak_thread, count=3, traced=0)
    assert report.new_threads == ("left-behind-2", "left-behind-3", "left-behind-4")
    with pytest.raises(LeakError, match="threads left running"):
        report.check()


def test_a_failing_cycle_is_reported_with_its_error():
    with pytest.raises(LeakError, match="ValueError: the store refused cycle 2"):
        _probe(fail_on_third)


def test_a_child_that_dies_is_reported():
    with pytest.raises(LeakError, match=r"died \(exit 3\); its stderr: cycle says goodbye"):
        _probe(die)


def test_a_cycle_that_hangs_is_killed_at_the_deadline():
    with LeakProbe(hang, timeout=2) as probe, pytest.raises(LeakError, match="did not answer warm_up within 2 s"):
        probe.warm_up(1)


# ------------------------------------------------------------------ a store's cycle

class _Forgetful:
    """A store that acknowledges writes and forgets them."""

    def __init__(self, path: str) -> None:
        self.closed = False

    def store(self, item):
        return item.id

    def retrieve(self, item_id):
        return None

    def close(self) -> None:
        self.closed = True


def test_a_store_cycle_checks_its_read_back(tmp_path):
    from memsys.adapters.tinydb_store import TinyDBMemoryAdapter

    cycle = StoreCycle(functools.partial(TinyDBMemoryAdapter), str(tmp_path), "items.json")
    for n in range(6):
        cycle(n)
    store = TinyDBMemoryAdapter(path=str(tmp_path / "items.json"))
    try:
        assert {item.content for item in store.search({})} == {f"cycle {n}" for n in range(2, 6)}
    finally:
        store.close()
    with pytest.raises(AssertionError, match="read back None"):
        StoreCycle(_Forgetful, str(tmp_path))(0)
