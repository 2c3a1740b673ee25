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
MemoryManager transactions with LMDB and DuckDB, with failures between transactions and in
the middle of commits (``transactions_all_or_nothing_after_power_loss``,
``transactions_acknowledged_survive_power_loss``). Where FUSE cannot mount the checks are
skipped with the reason; with CI set they fail instead.
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
    from memsys.domain.errors import MemsysError
    from memsys.domain.model import MemoryItem, MemoryType

    check = POWERLOSS_CHECKS[0]
    rng = random.Random(seed)
    path = os.path.join(fs.mount_point, "alone")
    acked: dict[str, str] = {}
    store = target.open(path)
    failures = 0
    for round_no in range(2):
        for n in range(dose.powerloss_writes):
            item_id = f"u-{rng.randrange(4)}" if rng.random() < 0.3 else f"p{round_no}-{n:04d}"
            content = f"power round {round_no} write {n}"
            store.store(MemoryItem(id=item_id, content=content, memory_type=MemoryType.EPISODIC))
            acked[item_id] = content
        fs.power_failure()
        failures += 1
        _close_quietly(store)
        try:
            store = target.open(path)
        except MemsysError as exc:
            problems.setdefault(check, []).append(f"after power failure {failures} the store would not reopen: "
                                                  f"{type(exc).__name__}: {exc}")
            return ""
        wrong = []
        for item_id, content in sorted(acked.items()):
            item = store.retrieve(item_id)
            if item is None or item.content != content:
                wrong.append(f"{item_id!r} acknowledged as {content!r}, found "
                             f"{None if item is None else item.content!r}")
        if wrong:
            problems.setdefault(check, []).append(f"after power failure {failures}, {len(wrong)} of {len(acked)} "
                                                  f"acknowledged writes are wrong: " + "; ".join(wrong[:4]))
            break
    store.close()
    return f"{failures} power failures, {len(acked)} ids"


def _powerloss_transactions(target: Any, fs: Any, seed: int, dose: Any, problems: dict[str, list[str]]) -> str:
    from memsys.application.transactions import STEPS
    from memsys.domain.errors import CommitIncompleteError, MemsysError
    from memsys.testing.crash import SimulatedCrash, crash_at
    from memsys.testing.powerloss import _abandon
    from memsys.testing.verify_faults import cross_writes, judge_transactions, open_cross_manager, write_transaction

    rng = random.Random(seed + 1)
    folder = os.path.join(fs.mount_point, "stores")
    total = dose.powerloss_transactions
    points = {n: rng.choice((None, *STEPS)) for n in sorted(rng.sample(range(total), min(2, total)))}
    attempted: dict[str, dict[str, list[str]]] = {}
    acked: set[str] = set()
    failed: set[str] = set()
    manager = open_cross_manager(target, folder)
    for n in range(total):
        tx_id = f"pl{seed}-{n:04d}"
        writes = attempted[tx_id] = cross_writes(rng, tx_id)
        if points.get(n):
            crash_at(manager, points[n])
        try:
            write_transaction(manager, tx_id, writes)
        except SimulatedCrash:  # the power went mid-commit: all or nothing, either is fine
            pass
        except CommitIncompleteError:
            acked.add(tx_id)
        except MemsysError:
            failed.add(tx_id)
        else:
            acked.add(tx_id)
        if n in points:
            fs.power_failure()
            _abandon(manager)
            try:
                manager = open_cross_manager(target, folder)
            except MemsysError as exc:
                problems.setdefault(POWERLOSS_CHECKS[1], []).append(
                    f"after the power failure at transaction {n} the stores would not reopen: {exc}")
                return ""
    manager.close()
    fs.power_failure()
    try:
        manager = open_cross_manager(target, folder)
    except MemsysError as exc:
        problems.setdefault(POWERLOSS_CHECKS[1], []).append(f"after the final power failure: {exc}")
        return ""
    try:
        partial, lost, unexpected = judge_transactions(manager, attempted, acked, failed)
    finally:
        manager.close()
    if partial or unexpected:
        problems.setdefault(POWERLOSS_CHECKS[1], []).append(f"on only some stores: {partial[:5]}; applied though "
                                                            f"they failed: {unexpected[:5]}")
    if lost:
        problems.setdefault(POWERLOSS_CHECKS[2], []).append(f"{len(lost)} acknowledged transaction(s) lost: "
                                                            f"{lost[:5]}")
    at = ", ".join(f"transaction {n} ({step or 'between transactions'})" for n, step in points.items())
    return f"{len(attempted)} transactions, power failures at {at} and after close"


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
        with power_loss_fs(os.path.join(folder, "fs-tx")) as fs:
            notes.append(_powerloss_transactions(target, fs, seed, dose, problems))
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
