"""The faults real stores meet, as experiments: disk full, damaged files, a second opener,
oversized and out-of-range writes, sustained updates.

Each experiment runs on a real fault, never a simulation of one: a small tmpfs
that really fills up (``memsys.testing.disk``), bytes really flipped, cut or
zeroed on disk (``memsys.testing.damage``), a second object and a second
process really opening the same path, items really 64 MiB long, thousands of
updates really applied. ``memsys chaos run`` runs them on all seven embedded
stores, on the coordinator log and on a manager over several stores; the
building blocks (``disk_full_trial``, ``opener_trial``, ``soak_trial``) are
shared with the conformance kit, which runs them on any adapter.

Every experiment returns an ``Experiment`` whose counts say what went wrong:
``lost`` (acknowledged, then missing), ``partial`` (a transaction on some of its
stores), ``unexpected`` (a value never acknowledged: a write that raised and
appeared anyway, a silently different value), ``hung``, ``crashed`` and
``errors`` (an exception that is not the typed memsys error the fault calls for).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import random
import shutil
import threading
import time
from collections.abc import Callable
from typing import Any

from memsys.domain.errors import (
    CommitIncompleteError,
    DiskFullError,
    MemsysError,
    StoreLockedError,
)
from memsys.domain.model import MemoryItem, MemoryType
from memsys.testing.chaos import PATHS, SEVEN, Experiment, open_store_at
from memsys.testing.damage import (
    DamagePlan,
    FileHistory,
    Tally,
    build_images,
    data_files,
    image_of,
    normalise,
    payload_content,
    plan_trials,
    run_damage,
)
from memsys.testing.isolate import describe, run_isolated

MiB = 1 << 20


@dataclasses.dataclass(frozen=True)
class Dose:
    """How hard the fault experiments work."""

    name: str
    damage: DamagePlan
    damage_items: int
    opener_writes: int
    oversized: tuple[int, ...]
    soak_direct: int
    soak_managed: int
    #: Seconds each soak phase may take: a slow engine does fewer updates, and the report says so.
    soak_budget: float = 300.0
    disk_size: int = 24 * MiB
    timeout: float = 600.0


DOSES = {
    # A smoke dose for the harness's own tests.
    "tiny": Dose("tiny", DamagePlan(value_flips=1, random_flips=1, zero_value_blocks=1), 8, 5, (1 * MiB,), 60, 30,
                 timeout=300.0),
    "quick": Dose("quick", DamagePlan(value_flips=2, random_flips=3, zero_value_blocks=1), 16, 20,
                  (1 * MiB, 64 * MiB), 1200, 800, soak_budget=40.0, timeout=300.0),
    "default": Dose("default", DamagePlan(value_flips=4, random_flips=8, zero_value_blocks=2,
                                          truncate_all_files=True, zero_random_blocks=True), 32, 60,
                    (1 * MiB, 16 * MiB, 64 * MiB), 3000, 1500),
    "deep": Dose("deep", DamagePlan(value_flips=12, random_flips=40, zero_value_blocks=6, truncate_all_files=True,
                                    zero_random_blocks=True), 64, 200,
                 (1 * MiB, 4 * MiB, 16 * MiB, 32 * MiB, 64 * MiB), 60_000, 20_000, soak_budget=1200.0,
                 timeout=3600.0),
}

#: Per-version numbers at the edge of what stores keep (int64).
EDGE_VERSIONS = (2**63 - 1, 2**62 + 1, 2**53 + 1)


def _absorb(experiment: Experiment, tally: Tally) -> Experiment:
    for name in ("faults", "attempted", "acknowledged", "lost", "partial", "unexpected", "hung", "crashed",
                 "errors"):
        setattr(experiment, name, getattr(experiment, name) + getattr(tally, name))
    if tally.failed and experiment.status == "ok":
        experiment.status = "FAILED"
    experiment.detail = tally.summary()
    return experiment


def _item(item_id: str, content: Any, **metadata: Any) -> MemoryItem:
    return MemoryItem(id=item_id, content=content, memory_type=MemoryType.EPISODIC, metadata=metadata)


def _folder_bytes(folder: str) -> int:
    return sum(os.path.getsize(os.path.join(folder, rel)) for rel in data_files(folder)) if os.path.isdir(folder) \
        else 0


def _check_items(store: Any, acked: dict[str, dict[str, Any]], refused: set[str], tally: Tally, when: str) -> None:
    """Every acknowledged item is there, exactly; no refused write appeared."""
    for item_id, want in acked.items():
        try:
            got = store.retrieve(item_id)
        except MemsysError as exc:
            tally.fail("errors", f"{when}: retrieve({item_id}) raised {type(exc).__name__}: {exc}")
            continue
        if got is None:
            tally.fail("lost", f"{when}: acknowledged {item_id} is missing")
        elif normalise(got.to_dict()) != want:
            tally.fail("unexpected", f"{when}: {item_id} came back with a value never acknowledged")
    for item_id in sorted(refused - set(acked)):
        try:
            got = store.retrieve(item_id)
        except MemsysError:
            continue
        if got is not None:
            tally.fail("unexpected", f"{when}: {item_id} was refused with an error, yet it is stored")


# =============================================================================================== disk full


def _fill(disk: str, leave: int) -> str:
    from memsys.testing.disk import fill

    return fill(disk, leave=leave)


def disk_full_trial(open_store: Callable[[str], Any], disk: str, *, seed: int = 0, item_bytes: int = 48 << 10,
                    leave: int = 1 * MiB, max_writes: int = 400, failures_wanted: int = 6,
                    budget: float = 60.0) -> Tally:
    """Write to a store on the small file system ``disk`` until it is full, free the space, reopen.

    Every refused write must raise a typed memsys error (DiskFullError is the one that says what
    happened; any other typed error is noted); every acknowledged write must be there after the
    space is freed and the store reopened; no refused write may appear; new writes must succeed.
    """
    tally = Tally()
    rng = random.Random(seed)
    os.makedirs(disk, exist_ok=True)
    path = os.path.join(disk, "store")
    acked: dict[str, dict[str, Any]] = {}
    refused: set[str] = set()
    kinds: dict[str, int] = {}
    counter = iter(range(10**6))

    def new_item(size: int = item_bytes) -> MemoryItem:
        n = next(counter)
        return _item(f"full-{n:04d}", rng.randbytes(size // 2).hex(), n=n)

    def attempt(store: Any, item: MemoryItem, what: str) -> bool:
        tally.attempted += 1
        try:
            store.store(item)
        except MemsysError as exc:
            refused.add(item.id)
            kind = type(exc).__name__
            if not isinstance(exc, DiskFullError) and kind not in kinds:  # typed, but not saying why
                tally.notes.append(f"{what}: {kind}, not DiskFullError: {str(exc)[:160]}")
            kinds[kind] = kinds.get(kind, 0) + 1
            return False
        except Exception as exc:  # noqa: BLE001 - an untyped error is the finding
            refused.add(item.id)
            tally.fail("errors", f"{what}: untyped {type(exc).__name__}: {str(exc)[:160]}")
            return False
        acked[item.id] = normalise(item.to_dict())
        return True

    store = open_store(path)
    ballast = None
    try:
        for _ in range(5):
            if not attempt(store, new_item(1024), "a write on an empty disk"):
                tally.fail("errors", "the store refused writes before the disk was full")
                return tally
        ballast = _fill(disk, leave)
        failures = 0
        first = next(iter(acked))
        deadline = time.monotonic() + budget
        for n in range(max_writes):
            if failures >= failures_wanted or time.monotonic() > deadline:
                break
            if not attempt(store, new_item(), "a write on a full disk"):
                failures += 1
                tally.faults += 1
                if failures == 2:  # an update of an acknowledged item on a full disk: old value or new
                    update = MemoryItem.from_dict({**acked[first], "content": rng.randbytes(item_bytes // 2).hex()})
                    if not attempt(store, update, "an update on a full disk"):
                        refused.discard(update.id)  # refused: the id keeps its acknowledged value
        if not failures:
            tally.notes.append(f"the disk never filled ({n + 1} writes of {item_bytes} bytes)")
        os.unlink(ballast)
        ballast = None
        # The same store object: it takes writes again, or fails fast with a typed error until reopened.
        attempt(store, new_item(1024), "the first write after space was freed")
    finally:
        if ballast is not None:
            os.unlink(ballast)
        try:
            store.close()
        except MemsysError as exc:
            tally.notes.append(f"close after the full disk raised {type(exc).__name__}")
        except Exception as exc:  # noqa: BLE001
            tally.fail("errors", f"close raised untyped {type(exc).__name__}: {exc}")
    tally.acknowledged = len(acked)
    tally.notes.insert(0, "refusals: " + (", ".join(f"{k} {v}" for k, v in sorted(kinds.items())) or "none"))
    for round_ in ("reopened after the full disk", "reopened after a new write"):
        try:
            store = open_store(path)
        except MemsysError as exc:
            tally.fail("lost", f"{round_}: the store does not open ({type(exc).__name__}: {exc}); "
                               f"{len(acked)} acknowledged writes are out of reach", n=len(acked))
            return tally
        try:
            _check_items(store, acked, refused, tally, round_)
            if round_.endswith("full disk"):
                item = new_item(1024)
                try:
                    store.store(item)
                    acked[item.id] = normalise(item.to_dict())
                except MemsysError as exc:
                    tally.fail("errors", f"a write after space was freed and the store reopened failed: "
                                         f"{type(exc).__name__}: {exc}")
        finally:
            store.close()
    tally.acknowledged = len(acked)
    return tally


def _on_small_disk(experiment: Experiment, folder: str, size: int, run: Callable[[str], Tally]) -> Experiment:
    from memsys.testing.disk import DiskFaultUnavailable, small_filesystem
    from memsys.testing.plugin import servers_required

    started = time.perf_counter()
    disk = os.path.join(folder, "disk")
    try:
        with small_filesystem(disk, size=size):
            tally = run(disk)
    except DiskFaultUnavailable as exc:
        # Where no small file system can be mounted the fault cannot be made real; CI must make it.
        experiment.status = "FAILED" if servers_required() else "unavailable"
        experiment.detail = f"unavailable: {exc}"
        return experiment
    _absorb(experiment, tally)
    experiment.seconds = time.perf_counter() - started
    return experiment


def disk_full(backend: str, folder: str, seed: int, dose: Dose) -> Experiment:
    """One store on a small file system that fills up."""
    return _on_small_disk(Experiment("disk full", backend), folder, dose.disk_size, lambda disk: disk_full_trial(
        functools.partial(open_store_at, backend), disk, seed=seed))


def disk_full_log(folder: str, seed: int, dose: Dose) -> Experiment:
    """The coordinator log on a small file system that fills up; the store elsewhere."""
    def run(disk: str) -> Tally:
        return _manager_disk_full(disk, seed, stores={"lmdb": os.path.join(folder, "stores")}, log_folder=disk)

    return _on_small_disk(Experiment("disk full", "coordinator log"), folder, dose.disk_size, run)


def disk_full_manager(folder: str, seed: int, dose: Dose) -> Experiment:
    """A manager over LMDB, DuckDB, Kuzu and TinyDB, their files and the log on one small file system."""
    def run(disk: str) -> Tally:
        return _manager_disk_full(disk, seed, stores={b: disk for b in ("lmdb", "duckdb", "kuzu", "tinydb")},
                                  log_folder=disk)

    return _on_small_disk(Experiment("disk full", "manager lmdb+duckdb+kuzu+tinydb"), folder,
                          max(dose.disk_size, 32 * MiB), run)


def _open_manager(stores: dict[str, str], log_folder: str) -> Any:
    from memsys.application.manager import MemoryManager

    adapters = {}
    try:
        for backend, where in stores.items():
            adapters[backend] = open_store_at(backend, os.path.join(where, PATHS[backend]))
        return MemoryManager(adapters, transaction_log=os.path.join(log_folder, "txlog"))
    except BaseException:
        for adapter in adapters.values():
            try:
                adapter.close()
            except MemsysError:
                pass
        raise


def _manager_disk_full(disk: str, seed: int, *, stores: dict[str, str], log_folder: str,
                       item_bytes: int = 24 << 10, max_transactions: int = 300) -> Tally:
    """Transactions over ``stores`` until the disk is full; then free it, commit more, reopen, judge."""
    from memsys.testing.crash import present_ids
    from memsys.testing.history import TransactionRecord, check_transactions

    tally = Tally()
    rng = random.Random(seed)
    names = sorted(stores)
    records: dict[str, TransactionRecord] = {}
    kinds: dict[str, int] = {}

    def transaction(manager: Any, n: int, size: int) -> bool:
        tx = f"tx-{n:04d}"
        writes = {s: [f"{tx}-{s}"] for s in names}
        record = records[tx] = TransactionRecord(tx, writes)
        try:
            with manager.with_transaction(names):
                for s in names:
                    manager.adapters[s].store(_item(f"{tx}-{s}", rng.randbytes(size // 2).hex(), tx=tx))
            record.outcome = "ok"
            return True
        except CommitIncompleteError:
            record.outcome = "ok"  # committed: recovery must complete it
            return True
        except MemsysError as exc:
            record.outcome = "fail"
            cause = exc.__cause__
            kind = type(exc).__name__ + (f" ({type(cause).__name__})" if isinstance(cause, MemsysError) else "")
            kinds[kind] = kinds.get(kind, 0) + 1
            return False
        except Exception as exc:  # noqa: BLE001
            record.outcome = "info"  # an untyped error says nothing about the outcome
            tally.fail("errors", f"transaction {tx} raised untyped {type(exc).__name__}: {str(exc)[:160]}")
            return False

    manager = _open_manager(stores, log_folder)
    ballast = None
    n = 0
    try:
        for _ in range(3):
            if not transaction(manager, n, 1024):
                tally.fail("errors", "transactions failed before the disk was full")
            n += 1
        ballast = _fill(disk, 512 << 10)
        failures = 0
        while n < max_transactions and failures < 6:
            if not transaction(manager, n, item_bytes):
                failures += 1
                tally.faults += 1
            n += 1
        if not failures:
            tally.notes.append(f"the disk never filled in {max_transactions} transactions")
        os.unlink(ballast)
        ballast = None
        try:
            report = manager.recover()
            if not report.ok:
                tally.notes.append(f"recovery after space was freed: {report.failed_stores}")
        except MemsysError as exc:
            tally.notes.append(f"recover() after space was freed raised {type(exc).__name__}: {exc}")
        for _ in range(3):
            if not transaction(manager, n, 1024):
                tally.fail("errors", f"transaction tx-{n:04d}, after space was freed, failed")
            n += 1
    finally:
        if ballast is not None:
            os.unlink(ballast)
        try:
            manager.close()
        except MemsysError as exc:
            tally.notes.append(f"close raised {type(exc).__name__}: {exc}")
    try:
        manager = _open_manager(stores, log_folder)
    except MemsysError as exc:
        tally.fail("lost", f"the manager does not reopen after the full disk: {type(exc).__name__}: {exc}",
                   n=sum(r.outcome == "ok" for r in records.values()))
        return tally
    try:
        if not transaction(manager, n, 1024):
            tally.fail("errors", "a transaction after reopening failed")
        check = check_transactions(records, present_ids(manager))
    finally:
        manager.close()
    tally.attempted, tally.acknowledged = check.attempted, check.acknowledged
    for kind in ("lost", "partial", "unexpected"):
        ids = getattr(check, kind)
        if ids:
            tally.fail(kind, f"transactions {ids[:4]}", n=len(ids))
    tally.notes.insert(0, "refusals: " + (", ".join(f"{k} {v}" for k, v in sorted(kinds.items())) or "none"))
    return tally


# =============================================================================================== damaged files


def damaged_files(backend: str, folder: str, seed: int, dose: Dose) -> Experiment:
    """Bit flips, truncation and zeroed blocks in one store's files, judged in child processes."""
    experiment = Experiment("damaged files", backend)
    started = time.perf_counter()
    shutil.rmtree(folder, ignore_errors=True)
    options = _damage_options(backend)
    open_ = functools.partial(open_store_at, backend, **options)
    closed, crashed = build_images(open_, os.path.join(folder, "pristine"), items=dose.damage_items, seed=seed,
                                   path=PATHS[backend], crash_copy=os.path.join(folder, "crashed"))
    tally = run_damage(open_, closed, plan_trials(closed, dose.damage, seed), folder)
    if crashed is not None:  # the same damage to the files a crash leaves (journals not compacted)
        tally.merge(run_damage(open_, crashed, plan_trials(crashed, dose.damage, seed + 1), folder))
    _absorb(experiment, tally)
    experiment.seconds = time.perf_counter() - started
    shutil.rmtree(folder, ignore_errors=True)
    return experiment


def _damage_options(backend: str) -> dict[str, Any]:
    """Journal stores compact early here, so their snapshots are damaged too, not only their logs."""
    import inspect

    from memsys.adapters import adapter_class

    parameters = inspect.signature(adapter_class(backend).__init__).parameters
    return {"compact_bytes": 12 << 10} if "compact_bytes" in parameters else {}


class _LogView:
    """A manager opened on a (damaged) coordinator log with fresh, empty stores: what recovery
    finds in the log is all the stores get, so a record the log drops is an item lost."""

    def __init__(self, log_path: str) -> None:
        from memsys.application.manager import MemoryManager

        fresh = log_path + ".fresh-stores"
        shutil.rmtree(fresh, ignore_errors=True)
        self.manager = MemoryManager({name: open_store_at("lmdb", os.path.join(fresh, name)) for name in ("a", "b")},
                                     transaction_log=log_path)

    def retrieve(self, item_id: str) -> MemoryItem | None:
        return self.manager.adapters[item_id.rsplit("-", 1)[-1]].retrieve(item_id)

    def search(self, query: Any) -> list[MemoryItem]:
        return [item for name in ("a", "b") for item in self.manager.adapters[name].search(query)]

    def close(self) -> None:
        from memsys.testing.crash import abandon

        abandon(self.manager)  # no checkpoint: the damaged copy stays as it is


def open_log_view(path: str) -> _LogView:
    return _LogView(path)


def damaged_log(folder: str, seed: int, dose: Dose) -> Experiment:
    """Bit flips, truncation and zeroed blocks in the coordinator log, recovered into empty stores."""
    from memsys.application.manager import MemoryManager
    from memsys.testing.crash import abandon

    experiment = Experiment("damaged files", "coordinator log")
    started = time.perf_counter()
    shutil.rmtree(folder, ignore_errors=True)
    log_folder = os.path.join(folder, "pristine")
    os.makedirs(log_folder)
    rng = random.Random(seed)
    manager = MemoryManager({name: open_store_at("lmdb", os.path.join(folder, "stores", name)) for name in ("a", "b")},
                            transaction_log=os.path.join(log_folder, "txlog"))
    history = FileHistory(log_folder)
    expected: dict[str, dict[str, Any]] = {}
    needles: dict[str, bytes] = {}
    try:
        for n in range(dose.damage_items):
            contents = {name: payload_content(rng, 512) for name in ("a", "b")}
            with manager.with_transaction(["a", "b"]):
                for name, content in contents.items():
                    manager.adapters[name].store(_item(f"log-{n:03d}-{name}", content, n=n))
            history.changed([f"log-{n:03d}-{name}" for name in contents])
            for name, content in contents.items():
                item_id = f"log-{n:03d}-{name}"
                expected[item_id] = normalise(manager.adapters[name].retrieve(item_id).to_dict())
                needles[item_id] = content[232:280].encode()
    finally:
        abandon(manager)  # as a crash leaves it: every commit still in the log
    history.changed(expected, closed=True)
    image = image_of(log_folder, "txlog", expected, needles, history)
    tally = run_damage(open_log_view, image, plan_trials(image, dose.damage, seed), folder)
    _absorb(experiment, tally)
    experiment.seconds = time.perf_counter() - started
    shutil.rmtree(folder, ignore_errors=True)
    return experiment


# =============================================================================================== second opener


def _opener_child(open_store: Callable[[str], Any], path: str, writes: int, big_writes: int, big_bytes: int,
                  marker: str) -> dict[str, Any]:
    """In another process: open ``path`` while the parent holds it; if let in, write alongside it."""
    try:
        store = open_store(path)
    except BaseException as exc:  # noqa: BLE001 - judged by the parent
        return {"opened": False, "error": describe(exc)}
    with open(marker, "w"):
        pass
    acked: dict[str, Any] = {}
    errors: list[dict[str, Any]] = []
    rng = random.Random(7)
    slowest = 0.0
    try:
        for n in range(writes + big_writes):
            size = big_bytes if n < big_writes else 256
            item = _item(f"child-{n:04d}", payload_content(rng, 64) + "x" * size, n=n)
            started = time.monotonic()
            try:
                store.store(item)
                acked[item.id] = _digest(item)
            except BaseException as exc:  # noqa: BLE001
                errors.append(describe(exc))
            slowest = max(slowest, time.monotonic() - started)
            time.sleep(0.002)
        seen = {}
        for n in range(writes):
            try:
                got = store.retrieve(f"parent-{n:04d}")
            except BaseException as exc:  # noqa: BLE001
                errors.append(describe(exc))
                continue
            if got is not None:
                seen[got.id] = _digest(got)
    finally:
        try:
            store.close()
        except BaseException as exc:  # noqa: BLE001
            errors.append(describe(exc))
    return {"opened": True, "acked": acked, "errors": errors[:5], "seen": seen, "slowest": slowest}


@dataclasses.dataclass
class OpenerResult:
    """How the second openers fared: "refused" (StoreLockedError), "shared", "error", or how the
    child died."""

    in_process: str = ""
    other_process: str = ""
    tally: Tally = dataclasses.field(default_factory=Tally)


def opener_trial(open_store: Callable[[str], Any], path: str, *, writes: int = 20, big_writes: int = 0,
                 big_bytes: int = 0, timeout: float = 120.0, address_space: int | None = None) -> OpenerResult:
    """Open ``path``, then open it again in this process and in another one, writing from every
    opener that gets in. Each second opener must be refused with StoreLockedError, or get in
    safely: every opener sees the others' acknowledged writes, and all of them survive a reopen."""
    result = OpenerResult()
    tally = result.tally
    rng = random.Random(11)
    acked: dict[str, str] = {}  # id -> digest (values may be megabytes)
    slowest = [0.0]
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)

    def write(store: Any, item_id: str, what: str, size: int = 256) -> None:
        item = _item(item_id, payload_content(rng, 64) + "y" * size)
        tally.attempted += 1
        started = time.monotonic()
        try:
            store.store(item)
        except MemsysError as exc:
            tally.fail("errors", f"{what}: store({item_id}) raised {type(exc).__name__}: {exc}")
            return
        finally:
            slowest[0] = max(slowest[0], time.monotonic() - started)
        acked[item_id] = _digest(item)

    first = open_store(path)
    try:
        for n in range(3):
            write(first, f"first-{n:04d}", "the first opener")
        # A second opener in this process.
        try:
            second = open_store(path)
        except StoreLockedError:
            result.in_process = "refused"
        except MemsysError as exc:
            result.in_process = "error"
            tally.fail("errors", f"a second opener in this process got {type(exc).__name__}, not StoreLockedError: "
                                 f"{exc}")
        else:
            result.in_process = "shared"
            try:
                for n in range(writes):
                    write(first, f"one-{n:04d}", "the first opener")
                    write(second, f"two-{n:04d}", "the second opener")
                for store, prefix, other in ((first, "two", "first"), (second, "one", "second")):
                    for item_id in [i for i in acked if i.startswith(prefix)]:
                        got = store.retrieve(item_id)
                        if got is None or _digest(got) != acked[item_id]:
                            tally.fail("lost", f"the {other} opener does not see the other opener's acknowledged "
                                               f"{item_id}")
            finally:
                second.close()
        # A second opener in another process, writing while this one writes.
        marker = path + ".child-opened"
        if os.path.exists(marker):
            os.unlink(marker)
        outcome: list[Any] = []
        child = threading.Thread(target=lambda: outcome.extend(run_isolated(
            [functools.partial(_opener_child, open_store, path, writes, big_writes, big_bytes, marker)],
            timeout=timeout, address_space=address_space)))
        child.start()
        deadline = time.monotonic() + timeout
        while child.is_alive() and not os.path.exists(marker) and time.monotonic() < deadline:
            time.sleep(0.01)
        for n in range(writes):
            write(first, f"parent-{n:04d}", "the first opener, while another process had the path")
            time.sleep(0.002)
        child.join()
        got = outcome[0]
        if got.status == "hung":
            result.other_process = "hung"
            tally.fail("hung", f"the second process: {got.detail}")
        elif got.died:
            result.other_process = got.status
            tally.fail("crashed", f"the second process: {got.detail}")
        elif got.status == "raised":
            result.other_process = "error"
            tally.fail("errors", f"the second process raised {got.error}")
        elif not got.value["opened"]:
            error = got.value["error"]
            result.other_process = "refused" if error["locked"] else "error"
            if not error["locked"]:
                tally.fail("errors", f"a second process got {error['type']}, not StoreLockedError: "
                                     f"{error['message'][:160]}")
        else:
            result.other_process = "shared"
            child_acked = got.value["acked"]
            tally.attempted += writes + big_writes
            tally.notes.append(f"slowest write: {slowest[0]:.2f}s here, {got.value['slowest']:.2f}s in the "
                               "other process")
            for error in got.value["errors"]:
                tally.fail("errors", f"the second process: {error['type']}: {error['message'][:160]}")
            acked.update(child_acked)
            for item_id, want in child_acked.items():  # written by the other process: visible here too
                seen = first.retrieve(item_id)
                if seen is None or _digest(seen) != want:
                    tally.fail("lost", f"the first opener does not see {item_id}, acknowledged by the other process")
            for item_id, value in got.value["seen"].items():
                if value != acked.get(item_id):
                    tally.fail("unexpected", f"the other process read {item_id} with a value never acknowledged")
        if os.path.exists(marker):
            os.unlink(marker)
    finally:
        first.close()
    tally.acknowledged = len(acked)
    reopened = open_store(path)  # the path is free again once its opener closed it
    try:
        _check_digests(reopened, acked, {}, tally, "reopened after the second openers")
    finally:
        reopened.close()
    return result


def second_opener(backend: str, folder: str, seed: int, dose: Dose) -> Experiment:
    """Two openers of one store path: in this process and in another one."""
    from memsys.adapters import adapter_class

    experiment = Experiment("second opener", backend)
    started = time.perf_counter()
    shutil.rmtree(folder, ignore_errors=True)
    shared = not getattr(adapter_class(backend), "exclusive_path", True)
    # A shared LMDB environment must survive the other process growing its map.
    big = (24, 4 * MiB) if backend == "lmdb" else (0, 0)
    result = opener_trial(functools.partial(open_store_at, backend), os.path.join(folder, PATHS[backend]),
                          writes=dose.opener_writes, big_writes=big[0] if dose.name != "tiny" else 2,
                          big_bytes=big[1], address_space=1 << 40)
    tally = result.tally
    tally.faults = 2
    for who, how in (("in this process", result.in_process), ("in another process", result.other_process)):
        if how == "shared" and not shared:
            tally.fail("unexpected", f"a second opener {who} was let in, though {backend} does not share its path")
    tally.notes.append(f"second opener in this process: {result.in_process}; in another process: "
                       f"{result.other_process}")
    _absorb(experiment, tally)
    experiment.seconds = time.perf_counter() - started
    shutil.rmtree(folder, ignore_errors=True)
    return experiment


def _log_opener_child(log_path: str, store_folder: str) -> dict[str, Any]:
    from memsys.application.manager import MemoryManager

    store = open_store_at("lmdb", store_folder)
    try:
        manager = MemoryManager({"b": store}, transaction_log=log_path)
    except BaseException as exc:  # noqa: BLE001
        store.close()
        return {"opened": False, "error": describe(exc)}
    manager.close()
    return {"opened": True}


def second_opener_log(folder: str, seed: int, dose: Dose) -> Experiment:
    """Two managers on one coordinator log: in this process and in another one."""
    from memsys.application.manager import MemoryManager

    experiment = Experiment("second opener", "coordinator log")
    started = time.perf_counter()
    shutil.rmtree(folder, ignore_errors=True)
    tally = Tally(faults=2)
    log_path = os.path.join(folder, "txlog")
    first = MemoryManager({"a": open_store_at("lmdb", os.path.join(folder, "a"))}, transaction_log=log_path)
    try:
        for n in range(3):
            first.store(_item(f"first-{n}", "x"))
        tally.attempted = tally.acknowledged = 3
        store = open_store_at("lmdb", os.path.join(folder, "b"))
        try:
            second = MemoryManager({"b": store}, transaction_log=log_path)
        except StoreLockedError:
            store.close()
            how = "refused"
        except MemsysError as exc:
            store.close()
            how = "error"
            tally.fail("errors", f"a second manager on the log got {type(exc).__name__}, not StoreLockedError")
        else:
            how = "shared"
            second.close()
            tally.fail("unexpected", "a second manager in this process opened the same transaction_log")
        outcome = run_isolated([functools.partial(_log_opener_child, log_path, os.path.join(folder, "c"))],
                               timeout=120, address_space=1 << 40)[0]
        if outcome.status != "returned":
            tally.fail("crashed" if outcome.died else "errors",
                       f"the second process: {outcome.detail or outcome.error}")
            other = outcome.status
        elif outcome.value["opened"]:
            other = "shared"
            tally.fail("unexpected", "a manager in another process opened the same transaction_log")
        elif outcome.value["error"]["locked"]:
            other = "refused"
        else:
            other = "error"
            tally.fail("errors", f"a second process got {outcome.value['error']['type']}, not StoreLockedError")
        for n in range(3, 6):
            first.store(_item(f"first-{n}", "x"))
        tally.attempted = tally.acknowledged = 6
        tally.notes.append(f"second manager in this process: {how}; in another process: {other}")
    finally:
        first.close()
    reopened = MemoryManager({"a": open_store_at("lmdb", os.path.join(folder, "a"))}, transaction_log=log_path)
    try:
        missing = [n for n in range(6) if reopened.retrieve(f"first-{n}") is None]
        if missing:
            tally.fail("lost", f"first-{missing} missing after reopening", n=len(missing))
    finally:
        reopened.close()
    _absorb(experiment, tally)
    experiment.seconds = time.perf_counter() - started
    shutil.rmtree(folder, ignore_errors=True)
    return experiment


# =============================================================================================== oversized


def _big_item(item_id: str, size: int, **kwargs: Any) -> MemoryItem:
    content = os.urandom(size // 2 + 1).hex()[:size]
    return MemoryItem(id=item_id, content=content, memory_type=MemoryType.EPISODIC, metadata={"size": size}, **kwargs)


def _digest(item: MemoryItem) -> str:
    """A fingerprint of every field (the content hashed as it is: it may be 64 MiB)."""
    fields = normalise({k: v for k, v in item.to_dict().items() if k != "content"})
    content = item.content if isinstance(item.content, str) else json.dumps(normalise(item.content))
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode() + b"\0" + content.encode()).hexdigest()


def oversized(backend: str, folder: str, seed: int, dose: Dose) -> Experiment:
    """Items of growing size up to 64 MiB and versions near 2**63, stored directly."""
    experiment = Experiment("oversized and out-of-range writes", backend)
    started = time.perf_counter()
    shutil.rmtree(folder, ignore_errors=True)
    tally = Tally()
    path = os.path.join(folder, PATHS[backend])
    acked: dict[str, str] = {}
    refused: dict[str, str] = {}
    store = open_store_at(backend, path)
    try:
        candidates: list[tuple[str, Callable[[], MemoryItem]]] = [
            (f"size-{size >> 10}KiB", functools.partial(_big_item, f"size-{size >> 10}KiB", size))
            for size in dose.oversized]
        candidates += [(f"version-{v}", functools.partial(_item_with_version, f"version-{v}", v))
                       for v in EDGE_VERSIONS]
        for item_id, make in candidates:
            tally.attempted += 1
            tally.faults += 1
            try:
                item = make()
            except MemsysError as exc:  # refused by the domain before any store saw it
                refused[item_id] = type(exc).__name__
                continue
            try:
                store.store(item)
            except MemsysError as exc:
                refused[item_id] = type(exc).__name__
                continue
            except Exception as exc:  # noqa: BLE001
                tally.fail("errors", f"{item_id}: untyped {type(exc).__name__}: {str(exc)[:160]}")
                refused[item_id] = type(exc).__name__
                continue
            acked[item_id] = _digest(item)
            del item
        tally.acknowledged = len(acked)
        _check_digests(store, acked, refused, tally, "right after the writes")
        try:  # the store still takes ordinary writes
            store.store(_item("after-oversized", "small"))
            acked["after-oversized"] = _digest(store.retrieve("after-oversized"))
        except MemsysError as exc:
            tally.fail("errors", f"an ordinary write after the oversized ones failed: {type(exc).__name__}: {exc}")
    finally:
        store.close()
    try:
        store = open_store_at(backend, path)
    except MemsysError as exc:
        tally.fail("lost", f"the store does not reopen: {type(exc).__name__}: {exc}", n=len(acked))
    else:
        try:
            _check_digests(store, acked, refused, tally, "after reopening")
        finally:
            store.close()
    tally.notes.append("stored: " + ", ".join(sorted(acked)) + "; refused: "
                       + (", ".join(f"{k} ({v})" for k, v in sorted(refused.items())) or "none"))
    _absorb(experiment, tally)
    experiment.seconds = time.perf_counter() - started
    shutil.rmtree(folder, ignore_errors=True)
    return experiment


def _item_with_version(item_id: str, version: int) -> MemoryItem:
    return MemoryItem(id=item_id, content=f"version {version}", memory_type=MemoryType.EPISODIC, version=version)


def _check_digests(store: Any, acked: dict[str, str], refused: dict[str, str], tally: Tally, when: str) -> None:
    for item_id, digest in acked.items():
        try:
            got = store.retrieve(item_id)
        except MemsysError as exc:
            tally.fail("errors", f"{when}: retrieve({item_id}) raised {type(exc).__name__}: {exc}")
            continue
        if got is None:
            tally.fail("lost", f"{when}: acknowledged {item_id} is missing")
        elif _digest(got) != digest:
            tally.fail("unexpected", f"{when}: {item_id} came back different")
    for item_id in refused:
        try:
            if store.retrieve(item_id) is not None:
                tally.fail("unexpected", f"{when}: {item_id} was refused, yet it is stored")
        except MemsysError:
            pass


def oversized_transaction(folder: str, seed: int, dose: Dose) -> Experiment:
    """Oversized items in cross-store transactions over Kuzu, DuckDB and LMDB, and versions near
    2**63 replayed with ``write_versions``: stored everywhere or refused at prepare; afterwards the
    manager still commits and reopens."""
    experiment = Experiment("oversized and out-of-range writes", "transaction kuzu+duckdb+lmdb")
    started = time.perf_counter()
    shutil.rmtree(folder, ignore_errors=True)
    tally = Tally()
    stores = {b: folder for b in ("kuzu", "duckdb", "lmdb")}
    names = sorted(stores)
    acked: dict[str, dict[str, str]] = {}      # id -> store -> digest
    refused: dict[str, str] = {}
    manager = _open_manager(stores, folder)
    try:
        for size in dose.oversized:
            item_id = f"tx-size-{size >> 10}KiB"
            tally.attempted += 1
            tally.faults += 1
            item = _big_item(item_id, size)
            try:
                with manager.with_transaction(names):
                    for name in names:
                        manager.adapters[name].store(item)
            except CommitIncompleteError as exc:
                # Committed, yet a store cannot apply it: prepare should have refused it.
                tally.fail("partial", f"{item_id}: passed prepare, then a store failed to apply it: {exc}")
                acked[item_id] = {}
            except MemsysError as exc:
                refused[item_id] = type(exc).__name__
            except Exception as exc:  # noqa: BLE001
                tally.fail("errors", f"{item_id}: untyped {type(exc).__name__}: {str(exc)[:160]}")
                refused[item_id] = type(exc).__name__
            else:
                acked[item_id] = {name: _digest(manager.adapters[name].retrieve(item_id)) for name in names}
            del item
        for version in EDGE_VERSIONS:
            item_id = f"tx-version-{version}"
            tally.attempted += 1
            tally.faults += 1
            try:
                item = _item_with_version(item_id, version)
                for name in names:
                    manager.write_versions(name, [item])
            except CommitIncompleteError as exc:
                tally.fail("partial", f"{item_id}: passed prepare, then a store failed to apply it: {exc}")
                acked[item_id] = {}
            except MemsysError as exc:
                refused[item_id] = type(exc).__name__
            else:
                acked[item_id] = {name: _digest(manager.adapters[name].retrieve(item_id)) for name in names}
        _after_oversized(manager, names, acked, refused, tally, "after the oversized writes")
    finally:
        try:
            manager.close()
        except MemsysError as exc:
            tally.fail("errors", f"the manager did not close: {type(exc).__name__}: {exc}")
    try:
        manager = _open_manager(stores, folder)
    except MemsysError as exc:
        tally.fail("lost", f"the manager does not reopen (a bricked store): {type(exc).__name__}: {exc}",
                   n=len(acked))
    else:
        try:
            if not manager.last_recovery.ok:
                tally.fail("errors", f"recovery on reopening is not ok: {manager.last_recovery.failed_stores}")
            _after_oversized(manager, names, acked, refused, tally, "after reopening")
        finally:
            manager.close()
    tally.acknowledged = len(acked)
    tally.notes.append("refused: " + (", ".join(f"{k} ({v})" for k, v in sorted(refused.items())) or "none"))
    _absorb(experiment, tally)
    experiment.seconds = time.perf_counter() - started
    shutil.rmtree(folder, ignore_errors=True)
    return experiment


def _after_oversized(manager: Any, names: list[str], acked: dict[str, dict[str, str]], refused: dict[str, str],
                     tally: Tally, when: str) -> None:
    for item_id, digests in acked.items():
        for name in names:
            try:
                got = manager.adapters[name].retrieve(item_id)
            except MemsysError as exc:
                tally.fail("errors", f"{when}: {name}.retrieve({item_id}) raised {type(exc).__name__}")
                continue
            if got is None:
                tally.fail("partial" if digests else "lost", f"{when}: {item_id} missing on {name}")
            elif digests and _digest(got) != digests[name]:
                tally.fail("unexpected", f"{when}: {item_id} differs on {name}")
    for item_id in refused:
        for name in names:
            try:
                if manager.adapters[name].retrieve(item_id) is not None:
                    tally.fail("unexpected", f"{when}: refused {item_id} is stored on {name}")
            except MemsysError:
                pass
    probe = f"probe-{when.replace(' ', '-')}"
    try:  # the manager still commits ordinary transactions on every store
        with manager.with_transaction(names):
            for name in names:
                manager.adapters[name].store(_item(probe, "small"))
    except MemsysError as exc:
        tally.fail("errors", f"{when}: an ordinary transaction failed (a bricked store): {type(exc).__name__}: {exc}")


# =============================================================================================== sustained updates


def soak_trial(store: Any, updates: int, *, ids: int = 6, prefix: str = "soak", folder: str | None = None,
               seed: int = 0, budget: float | None = None) -> tuple[Tally, dict[str, dict[str, Any]], tuple[int, int]]:
    """``updates`` updates spread over ``ids`` ids; every one must succeed. Returns the tally, the
    final values, and the store's file sizes (bytes) at half-way and at the end, after flushes.
    With ``budget`` (seconds) the dose ends early on a slow store, and a note says so."""
    tally = Tally()
    rng = random.Random(seed)
    latest: dict[str, dict[str, Any]] = {}
    sizes = [0, 0]
    flush = getattr(store, "flush", None)
    started = time.monotonic()
    for n in range(updates):
        if budget is not None and n and n % 50 == 0 and time.monotonic() - started > budget:
            tally.notes.append(f"the time budget ({budget:.0f}s) ended the soak after {n} of {updates} updates "
                               f"({n / (time.monotonic() - started):.0f} updates/s)")
            updates = n
            if folder is not None:
                if flush is not None:
                    flush()
                sizes[1] = _folder_bytes(folder)
            break
        item = _item(f"{prefix}-{n % ids}", f"update {n} " + payload_content(rng, 200), n=n)
        tally.attempted += 1
        try:
            store.store(item)
        except Exception as exc:  # noqa: BLE001 - sustained load must not fail at all
            tally.fail("errors", f"update {n} of {updates} failed: {type(exc).__name__}: {str(exc)[:200]}")
            break
        latest[item.id] = normalise(item.to_dict())
        if folder is not None and n + 1 in (updates // 2, updates):
            if flush is not None:
                flush()
            sizes[0 if n + 1 == updates // 2 else 1] = _folder_bytes(folder)
    tally.acknowledged = len(latest)
    return tally, latest, (sizes[0], sizes[1])


def _size_bound(tally: Tally, sizes: tuple[int, int], what: str) -> None:
    half, end = sizes
    tally.notes.append(f"{what}: {half >> 10} KiB at half-way, {end >> 10} KiB at the end")
    # Bounded: the second half of the load may not grow the files like the first half did, beyond
    # compaction thresholds (a few MiB) and slack.
    if end > half + max(32 * MiB, half // 4):
        tally.fail("errors", f"{what}: the files grew from {half >> 20} MiB to {end >> 20} MiB in the second half "
                             "of the updates: not bounded")


def _latest_check(store: Any, latest: dict[str, dict[str, Any]], tally: Tally, when: str, stamped: bool) -> None:
    for item_id, want in latest.items():
        try:
            got = store.retrieve(item_id)
        except MemsysError as exc:
            tally.fail("errors", f"{when}: retrieve({item_id}) raised {type(exc).__name__}: {exc}")
            continue
        if got is None:
            tally.fail("lost", f"{when}: {item_id} is missing")
            continue
        have = normalise(got.to_dict())
        if stamped:  # the manager stamps version and updated_at; the rest is the caller's
            have = {k: v for k, v in have.items() if k not in ("version", "updated_at")}
            want = {k: v for k, v in want.items() if k not in ("version", "updated_at")}
        if have != want:
            tally.fail("lost" if have.get("content") != want.get("content") else "unexpected",
                       f"{when}: {item_id} is not its last acknowledged update")
    count = len(store.search({}))
    if count != len(latest):
        tally.fail("unexpected", f"{when}: {count} items stored, {len(latest)} written")


def soak(backend: str, folder: str, seed: int, dose: Dose) -> Experiment:
    """A bounded dose of updates to a handful of ids, directly and through a manager."""
    from memsys.application.manager import MemoryManager

    experiment = Experiment("sustained updates", backend)
    started = time.perf_counter()
    shutil.rmtree(folder, ignore_errors=True)
    total = Tally()
    direct = os.path.join(folder, "direct")
    store = open_store_at(backend, os.path.join(direct, PATHS[backend]))
    try:
        tally, latest, sizes = soak_trial(store, dose.soak_direct, folder=direct, seed=seed, budget=dose.soak_budget)
        _latest_check(store, latest, tally, "directly", stamped=False)
    finally:
        store.close()
    store = open_store_at(backend, os.path.join(direct, PATHS[backend]))
    try:
        _latest_check(store, latest, tally, "directly, after reopening", stamped=False)
    finally:
        store.close()
    _size_bound(tally, sizes, f"{tally.attempted} direct updates")
    total.merge(tally)
    managed = os.path.join(folder, "managed")
    manager = MemoryManager({backend: open_store_at(backend, os.path.join(managed, PATHS[backend]))},
                            transaction_log=os.path.join(managed, "txlog"))
    try:
        tally, latest, sizes = soak_trial(manager.adapters[backend], dose.soak_managed, folder=managed,
                                          prefix="managed", seed=seed + 1, budget=dose.soak_budget)
        _latest_check(manager.adapters[backend], latest, tally, "through a manager", stamped=True)
    finally:
        manager.close()
    manager = MemoryManager({backend: open_store_at(backend, os.path.join(managed, PATHS[backend]))},
                            transaction_log=os.path.join(managed, "txlog"))
    try:
        _latest_check(manager.adapters[backend], latest, tally, "through a manager, after reopening", stamped=True)
    finally:
        manager.close()
    _size_bound(tally, sizes, f"{tally.attempted} updates through a manager")
    total.merge(tally)
    _absorb(experiment, total)
    experiment.seconds = time.perf_counter() - started
    shutil.rmtree(folder, ignore_errors=True)
    return experiment


# =============================================================================================== the plan


def _as_dict(run: Callable[[], Experiment]) -> dict[str, Any]:
    return dataclasses.asdict(run())


def _call(function: Callable[..., Experiment], *args: Any) -> Callable[[], dict[str, Any]]:
    return functools.partial(_as_dict, functools.partial(function, *args))


def fault_plan(workdir: str, seed: int, dose: Dose) -> list[tuple[str, list[tuple[str, str, Callable[[], dict]]]]]:
    """Groups of experiments, each group run in one child process: (description, [(name, target, call)])."""
    groups = []
    for n, backend in enumerate(SEVEN):
        base = os.path.join(workdir, f"real-{backend}")
        groups.append((f"real faults: {backend}", [
            ("disk full", backend, _call(disk_full, backend, os.path.join(base, "disk-full"), seed + n, dose)),
            ("damaged files", backend, _call(damaged_files, backend, os.path.join(base, "damage"), seed + n, dose)),
            ("second opener", backend, _call(second_opener, backend, os.path.join(base, "opener"), seed + n, dose)),
            ("oversized and out-of-range writes", backend,
             _call(oversized, backend, os.path.join(base, "oversized"), seed + n, dose)),
            ("sustained updates", backend, _call(soak, backend, os.path.join(base, "soak"), seed + n, dose)),
        ]))
    base = os.path.join(workdir, "real-manager")
    groups.append(("real faults: coordinator log and manager", [
        ("disk full", "coordinator log", _call(disk_full_log, os.path.join(base, "log-disk-full"), seed, dose)),
        ("disk full", "manager lmdb+duckdb+kuzu+tinydb",
         _call(disk_full_manager, os.path.join(base, "manager-disk-full"), seed, dose)),
        ("damaged files", "coordinator log", _call(damaged_log, os.path.join(base, "log-damage"), seed, dose)),
        ("second opener", "coordinator log", _call(second_opener_log, os.path.join(base, "log-opener"), seed, dose)),
        ("oversized and out-of-range writes", "transaction kuzu+duckdb+lmdb",
         _call(oversized_transaction, os.path.join(base, "oversized"), seed, dose)),
    ]))
    return groups


def run_group(experiments: list[tuple[str, str, Callable[[], dict]]], dose: Dose) -> list[Experiment]:
    """Run a group's experiments in a child process; one that hangs or kills it is counted as such."""
    outcomes = run_isolated([call for _, _, call in experiments], timeout=dose.timeout, rss_limit=4 << 30,
                            address_space=1 << 40)
    results = []
    for (name, target, _), outcome in zip(experiments, outcomes):
        if outcome.status == "returned":
            results.append(Experiment(**outcome.value))
            continue
        experiment = Experiment(name, target, status="FAILED")
        if outcome.status == "hung":
            experiment.hung = 1
        elif outcome.died:
            experiment.crashed = 1
        else:
            experiment.errors = 1
        experiment.detail = outcome.detail or f"{outcome.error['type']}: {outcome.error['message']}"
        results.append(experiment)
    _unmount_under(experiments)
    return results


def _unmount_under(experiments: list[tuple[str, str, Callable[[], dict]]]) -> None:
    """A child killed mid-experiment leaves its small file system mounted: take it down."""
    import subprocess

    folders = set()
    stack: list[Any] = [call for _, _, call in experiments]
    while stack:  # the folders among the (nested) partials' arguments
        call = stack.pop()
        if isinstance(call, functools.partial):
            stack.extend(call.args)
        elif isinstance(call, str) and os.path.isabs(call):
            folders.add(call)
    try:
        with open("/proc/mounts") as f:
            mounts = [line.split()[1] for line in f]
    except OSError:
        return
    for mount in mounts:
        if any(mount.startswith(os.path.abspath(folder) + os.sep) for folder in folders):
            subprocess.run(["umount", "-l", mount], capture_output=True, timeout=30)
