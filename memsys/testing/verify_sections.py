"""The ``damage`` and ``powerloss`` sections of ``memsys verify-adapter``.

damage: the adapter writes items with unique contents and closes; its files are also copied
while it is still open (what a crash leaves). Copies of both are damaged on disk (bit flips
inside stored values and anywhere, every file cut short, zeroed blocks) and each copy is
reopened and read in a child process (memsys.testing.damage, memsys.testing.isolate). Every
read must give the exact value or CorruptStoreError: never another value, an untyped error, a
crash or a hang. Checks ``closed_files`` and ``crash_copy``.

powerloss (stores that declare PERSISTENCE): the adapter runs on a FUSE file system that keeps
unsynced pages volatile (memsys.testing.powerloss) and the power fails: alone, after
acknowledged writes (``alone_acknowledged_writes_survive_power_loss``), and inside
MemoryManager transactions with LMDB and DuckDB (memsys.testing.powerloss.run_power_loss_experiment):
failures between transactions and in the middle of commits, during and right after log
compactions, and during and right after recovery, each history judged by the set and
all-or-nothing checkers (``transactions_all_or_nothing_after_power_loss``,
``transactions_acknowledged_survive_power_loss``). Where FUSE cannot mount the checks are
skipped with the reason; with CI set they fail instead.

leaks: the adapter is opened, written, read and closed many times in a fresh child process
(memsys.testing.leaks.LeakProbe over StoreCycle, as the leak scenario of features/stores.feature
does): after a warm-up, open files and threads must not grow (``no_files_or_threads_left_open``),
resident memory, which also shows native allocations, must grow by less than 512 KiB per cycle
(least-squares slope, ``resident_memory_flat``), and the Python heap traced over further cycles
by less than 1 MiB (``python_heap_flat``).
"""

from __future__ import annotations

import contextlib
import os
import random
from typing import Any

from memsys.ports import Capability


def _persistent(target: Any) -> bool:
    return Capability.PERSISTENCE in frozenset(getattr(target.cls(), "capabilities", ()))


# ------------------------------------------------------------------------------ damage

def damage_section(target: Any, folder: str, seed: int, dose: Any) -> list[Any]:
    from memsys.testing.damage import DamagePlan, Tally, build_images, plan_trials, run_damage
    from memsys.testing.verify import Check

    names = ["closed_files", "crash_copy"]
    if not _persistent(target):
        return [Check("damage", n, "skipped", f"{target.qualname} does not declare the 'persistence' capability")
                for n in names]
    closed, crashed = build_images(target, os.path.join(folder, "pristine"), items=12, seed=seed,
                                   crash_copy=os.path.join(folder, "crashed"))
    per_kind = max(1, dose.damage_trials // 4)
    plan = DamagePlan(value_flips=per_kind, random_flips=per_kind, truncate_all_files=dose.name != "quick",
                      zero_value_blocks=max(1, per_kind // 2), zero_random_blocks=dose.name == "deep")
    out = []
    for name, image in zip(names, (closed, crashed)):
        if image is None:
            continue
        trials = plan_trials(image, plan, seed)
        tally: Tally = run_damage(target, image, trials, os.path.join(folder, f"trials-{name}"), timeout=60.0)
        summary = f"{len(trials)} damaged copies: {tally.summary()}"
        out.append(Check("damage", name, "failed" if tally.failed else "passed",
                         summary + (f"\nreproduce: memsys verify-adapter '{target.spec}' --sections damage --seed {seed}"
                                    if tally.failed else "")))
    return out


# ------------------------------------------------------------------------------ power loss

POWERLOSS_CHECKS = ["alone_acknowledged_writes_survive_power_loss", "transactions_all_or_nothing_after_power_loss",
                    "transactions_acknowledged_survive_power_loss"]


def _close_quietly(store: Any) -> None:
    import logging

    previous = logging.root.manager.disable
    logging.disable(logging.CRITICAL)  # closes after a power failure reach a dead mount: expected
    try:
        with contextlib.suppress(Exception):
            store.close()
    finally:
        logging.disable(previous)


def _powerloss_alone(target: Any, fs: Any, seed: int, dose: Any, problems: dict[str, list[str]]) -> str:
    """Single writes (some overwriting a few keys) on the adapter alone, a power failure, and every
    key read back; the history (each write's version, each read's) is judged by the register
    checker (memsys.testing.history.check_registers): a key read older than its last acknowledged
    write, or missing, is stale; a value no write carried is unexpected."""
    from memsys.domain.errors import MemsysError
    from memsys.domain.model import MemoryItem, MemoryType
    from memsys.testing.history import Op, check_registers

    check = POWERLOSS_CHECKS[0]
    rng = random.Random(seed)
    path = os.path.join(fs.mount_point, "alone")
    history: list[Op] = []
    versions: dict[str, int] = {}  # content written -> its version (the write's sequence number)
    store = target.open(path)
    failures = 0
    for round_no in range(2):
        for n in range(dose.powerloss_writes):
            item_id = f"u-{rng.randrange(4)}" if rng.random() < 0.3 else f"p{round_no}-{n:04d}"
            version = versions[f"power round {round_no} write {n}"] = len(versions) + 1
            history.append(Op("writer", "invoke", "write", version, item_id))
            store.store(MemoryItem(id=item_id, content=f"power round {round_no} write {n}",
                                   memory_type=MemoryType.EPISODIC))
            history.append(Op("writer", "ok", "write", version, item_id))
        fs.power_failure()
        failures += 1
        _close_quietly(store)
        try:
            store = target.open(path)
        except MemsysError as exc:
            problems.setdefault(check, []).append(f"after power failure {failures} the store would not reopen: "
                                                  f"{type(exc).__name__}: {exc}")
            return ""
        for item_id in sorted({op.key for op in history if op.f == "write"}):
            history.append(Op("reader", "invoke", "read", None, item_id))
            item = store.retrieve(item_id)
            # A value no write carried reads as version 0, which the checker reports as unexpected.
            seen = None if item is None else versions.get(item.content, 0)
            history.append(Op("reader", "ok", "read", seen, item_id))
        verdict = check_registers(history)
        if not verdict.valid:
            wrong = [f"{e['key']!r} acknowledged at version {e['acknowledged']:g}, read {e['read']}"
                     for e in verdict.stale] + [f"{e['key']!r} read a value no write carried" for e in verdict.unexpected]
            problems.setdefault(check, []).append(
                f"after power failure {failures}, the register checker found {len(verdict.stale)} stale and "
                f"{len(verdict.unexpected)} unexpected reads of {verdict.keys} keys: " + "; ".join(wrong[:4]))
            break
    store.close()
    keys = len({op.key for op in history})
    return f"{failures} power failures, {keys} ids, every read judged by the register checker"


def _cross_stores(target: Any) -> Any:
    """Opens the adapter with LMDB and DuckDB (unsynced: the coordinator log makes commits durable),
    as memsys.testing.verify_faults.open_cross_manager does, for the power-loss experiment."""
    from memsys.adapters.duckdb_store import DuckDBMemoryAdapter
    from memsys.adapters.lmdb_store import LMDBMemoryAdapter
    from memsys.testing.verify_faults import NAME

    def open_stores(folder: str) -> dict[str, Any]:
        stores: dict[str, Any] = {}
        try:
            stores[NAME] = target.open(os.path.join(folder, "adapter"))
            stores["lmdb"] = LMDBMemoryAdapter(path=os.path.join(folder, "lmdb"), sync=False)
            stores["duckdb"] = DuckDBMemoryAdapter(path=os.path.join(folder, "items.duckdb"), sync=False)
        except BaseException:
            for store in stores.values():
                _close_quietly(store)
            raise
        return stores

    return open_stores


def _powerloss_transactions(target: Any, folder: str, seed: int, dose: Any, problems: dict[str, list[str]]) -> str:
    """memsys.testing.powerloss.run_power_loss_experiment over the adapter, LMDB and DuckDB, in each
    phase (power failures during commits, during log compactions, during recovery), each on its
    own mount; the history checkers' verdicts become the two transaction checks."""
    from memsys.testing.powerloss import PHASES, run_power_loss_experiment
    from memsys.testing.verify_faults import cross_writes

    notes = []
    for n, phase in enumerate(PHASES):
        result = run_power_loss_experiment(os.path.join(folder, f"fs-{phase}"), seed + 1 + n,
                                           dose.powerloss_transactions, power_failures=2, phase=phase,
                                           open_stores=_cross_stores(target), plan_writes=cross_writes)
        atomicity = [line for line in result["explain"].splitlines() if not line.startswith("lost")]
        if result["refused"]:
            problems.setdefault(POWERLOSS_CHECKS[1], []).append(f"{phase}: {result['refused']}")
        if result["recovery_failures"]:
            problems.setdefault(POWERLOSS_CHECKS[1], []).append(
                f"{phase}: recovery failed: {'; '.join(result['recovery_failures'][:2])}")
        if atomicity:
            problems.setdefault(POWERLOSS_CHECKS[1], []).append(f"{phase}: " + "; ".join(atomicity))
        if result["lost"]:
            problems.setdefault(POWERLOSS_CHECKS[2], []).append(
                f"{phase}: {len(result['lost'])} acknowledged transaction(s) lost: {result['lost'][:5]}")
        figures = f"{phase}: {result['attempted']} transactions ({result['acknowledged']} acknowledged), " \
                  f"{result['power_failures']} power failures"
        if phase == "compaction":
            figures += f", {result['compactions']} log compactions ({result['compactions_cut']} cut)"
        elif phase == "recovery":
            figures += f", {result['recoveries']} recoveries ({result['recoveries_cut']} cut)"
        notes.append(figures)
    return "; ".join(notes)


def powerloss_section(target: Any, folder: str, seed: int, dose: Any) -> list[Any]:
    from memsys.testing.plugin import servers_required
    from memsys.testing.powerloss import PowerLossUnavailable, power_loss_fs
    from memsys.testing.verify import Check

    if not _persistent(target):
        return [Check("powerloss", n, "skipped", f"{target.qualname} does not declare the 'persistence' capability")
                for n in POWERLOSS_CHECKS]
    problems: dict[str, list[str]] = {}
    notes: list[str] = []
    try:
        with power_loss_fs(os.path.join(folder, "fs")) as fs:
            notes.append(_powerloss_alone(target, fs, seed, dose, problems))
        notes.append(_powerloss_transactions(target, folder, seed, dose, problems))
    except PowerLossUnavailable as exc:
        if servers_required():
            return [Check("powerloss", n, "failed", f"FUSE cannot mount here and CI requires it: {exc}")
                    for n in POWERLOSS_CHECKS]
        return [Check("powerloss", n, "skipped", f"FUSE cannot mount here: {exc}") for n in POWERLOSS_CHECKS]
    out = []
    for name in POWERLOSS_CHECKS:
        note = notes[0] if name.startswith("alone") else notes[-1] if len(notes) > 1 else ""
        if name in problems:
            out.append(Check("powerloss", name, "failed", "\n".join(problems[name][:3]) +
                             f"\nreproduce: memsys verify-adapter '{target.spec}' --sections powerloss --seed {seed}"))
        else:
            out.append(Check("powerloss", name, "passed", note))
    return out


# ------------------------------------------------------------------------------ leaks

LEAK_CHECKS = ["no_files_or_threads_left_open", "resident_memory_flat", "python_heap_flat"]


def _leak_problems(report: Any) -> dict[str, str]:
    """Each check's problem in ``report`` (memsys.testing.leaks.LeakReport), by check name; the bounds
    are the probe's own defaults, so the section and the leak scenario judge alike."""
    from memsys.testing.leaks import DEFAULT_MAX_GROWTH_PER_CYCLE, DEFAULT_MAX_TRACED_GROWTH

    found = {}
    left = []
    if report.fds_after > report.fds_before:
        left.append(f"{report.fds_after - report.fds_before} more open files ({report.fds_before} before, "
                    f"{report.fds_after} after)")
    if report.new_threads:
        left.append(f"threads left running: {list(report.new_threads)[:8]}")
    if left:
        found[LEAK_CHECKS[0]] = f"after {report.cycles} open/close cycles: " + "; ".join(left)
    if report.per_cycle >= DEFAULT_MAX_GROWTH_PER_CYCLE:
        found[LEAK_CHECKS[1]] = (f"resident memory grew by {report.per_cycle / 1024:.0f} KiB per cycle "
                                 f"(bound {DEFAULT_MAX_GROWTH_PER_CYCLE >> 10} KiB); {report.summary()}")
    if report.traced_growth is None or report.traced_growth >= DEFAULT_MAX_TRACED_GROWTH:
        found[LEAK_CHECKS[2]] = (f"the Python heap grew by {report.traced_growth} bytes over {report.traced_cycles} "
                                 f"traced cycles (bound {DEFAULT_MAX_TRACED_GROWTH >> 10} KiB)")
    return found


def leaks_section(target: Any, folder: str, seed: int, dose: Any) -> list[Any]:
    from memsys.testing.leaks import MIB, LeakError, LeakProbe, StoreCycle, open_fds, resident_bytes
    from memsys.testing.verify import Check

    try:
        resident_bytes(), open_fds()
    except (RuntimeError, OSError, ImportError) as exc:  # neither /proc nor psutil: nothing to measure with
        return [Check("leaks", n, "skipped", f"cannot measure this process here: {exc}") for n in LEAK_CHECKS]
    reproduce = f"\nreproduce: memsys verify-adapter '{target.spec}' --sections leaks --seed {seed}"
    # A fresh child (the probe's): resident memory there moves only with the adapter's cycles.
    cycle = StoreCycle(target.open, os.path.join(folder, "cycles"), "store")
    os.makedirs(cycle.folder, exist_ok=True)  # an adapter may expect its path's parent to exist, as elsewhere
    try:
        with LeakProbe(cycle, timeout=dose.leak_timeout) as probe:
            probe.warm_up(dose.leak_warm_up)
            report = probe.measure(dose.leak_cycles, traced_cycles=dose.leak_traced_cycles)
    except LeakError as exc:  # a cycle raised, or the child died or hung: no verdict on leaks
        return [Check("leaks", n, "error", f"the open/write/read/close cycle did not run: {exc}"[:3000] + reproduce)
                for n in LEAK_CHECKS]
    problems = _leak_problems(report)
    notes = {
        LEAK_CHECKS[0]: f"{report.fds_before} open files before and {report.fds_after} after {report.cycles} cycles, "
                        "no new threads",
        LEAK_CHECKS[1]: f"{report.per_cycle / 1024:+.1f} KiB per cycle over {report.cycles} cycles after "
                        f"{dose.leak_warm_up} warm-up cycles (resident {report.resident[-1] / MIB:.0f} MiB)",
        LEAK_CHECKS[2]: f"{report.traced_growth:+d} bytes over {report.traced_cycles} traced cycles"
                        if report.traced_growth is not None else "",
    }
    return [Check("leaks", n, "failed", problems[n] + reproduce) if n in problems
            else Check("leaks", n, "passed", notes[n]) for n in LEAK_CHECKS]
