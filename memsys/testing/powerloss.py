"""Power-loss simulation: a FUSE filesystem that forgets what was never fsynced.

SIGKILL cannot catch a missing fsync: the killed process's writes sit in the OS page cache and
are all there when the next process reads. A power loss takes that cache with it. This module
mounts a passthrough FUSE filesystem (memsys.testing._powerloss_fs, in its own process so a hang
there cannot wedge the test run) over an empty folder; it keeps every written but not yet
fsynced page in its own memory, and ``power_failure()`` kills it, so those pages are gone, and
mounts it again over the same backing folder: the mount then shows only what was durable, as
the disk would after a reboot. With ``tear=True`` a seeded random subset of the unsynced pages
reaches the disk first (a write that got part of the way), as LazyFS's torn writes do.

What counts as durable (see _powerloss_fs for the details):

* file data: only after fsync / fdatasync of the file (or through an O_SYNC / O_DSYNC handle);
  msync(MS_SYNC) reaches the FUSE process as write-back writes then an fsync, so mmap writers
  are covered; close() makes nothing durable;
* metadata (create, mkdir, rename, unlink, truncate, ...): durable at once. A real filesystem
  can also lose a create or rename that its folder was never fsynced for; this does not simulate
  that.

    with power_loss_fs(tmp_path) as fs:
        path = os.path.join(fs.mount_point, "f")
        ...  # write, maybe fsync
        fs.power_failure()            # or power_failure(tear=True, seed=3)
        ...  # reopen: only what was fsynced is there

Needs /dev/fuse, the fusermount3 helper and libfuse3 (``bash chaos/install-fuse.sh``) and the
mfusepy package; where a mount is not possible ``power_loss_fs`` raises PowerLossUnavailable.
``run_power_loss_experiment`` is a whole experiment (transactions, power failures, recovery,
check) for the chaos runner.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

MOUNT_TIMEOUT = 15.0  # seconds for a mount to appear (the child imports mfusepy and loads libfuse)
CONTROL_TIMEOUT = 10.0


class PowerLossUnavailable(RuntimeError):
    """FUSE cannot mount here (no /dev/fuse, no fusermount3 or libfuse3, no mfusepy, or the mount failed)."""


class PowerLossFS:
    """A mounted power-loss filesystem: ``mount_point`` is where the stores go, ``backing`` is the disk."""

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = os.path.abspath(os.fspath(folder))
        self.backing = os.path.join(self.folder, "disk")
        self.mount_point = os.path.join(self.folder, "mnt")
        self.power_failures = 0
        self.power_is_off = False  # between cut_power() and restore()
        self._control_dir = tempfile.mkdtemp(prefix="memsys-plfs-")  # short: a socket path has 108 bytes
        self._control = os.path.join(self._control_dir, "control")
        self._process: subprocess.Popen[bytes] | None = None
        self._log_path = os.path.join(self._control_dir, "fuse.log")

    # -- lifecycle -------------------------------------------------------------------------------------
    def mount(self) -> None:
        _check_available()
        os.makedirs(self.backing, exist_ok=True)
        os.makedirs(self.mount_point, exist_ok=True)
        if os.path.ismount(self.mount_point):
            raise PowerLossUnavailable(f"{self.mount_point} is already a mount point")
        if os.listdir(self.mount_point):
            raise PowerLossUnavailable(f"{self.mount_point} is not empty; FUSE mounts over an empty folder")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._control)
        with open(self._log_path, "ab") as log:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "memsys.testing._powerloss_fs", self.backing, self.mount_point, self._control],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
        deadline = time.monotonic() + MOUNT_TIMEOUT
        while not (os.path.ismount(self.mount_point) and os.path.exists(self._control)):
            if self._process.poll() is not None:
                self._process = None
                raise PowerLossUnavailable(f"the FUSE process exited before mounting: {self._log_tail()}")
            if time.monotonic() > deadline:
                self._kill()
                raise PowerLossUnavailable(f"no FUSE mount at {self.mount_point} after {MOUNT_TIMEOUT:.0f} s: "
                                           f"{self._log_tail()}")
            time.sleep(0.02)

    def unmount(self) -> None:
        """Unmount cleanly: the FUSE process exits. Unsynced data is lost, as at a power failure (use
        ``sync_all`` first to keep it)."""
        if self._process is None:
            return
        if subprocess.run(["fusermount3", "-u", self.mount_point], capture_output=True).returncode != 0:
            # Busy (a descriptor left open by abandoned stores): detach it; the process dies below.
            subprocess.run(["fusermount3", "-u", "-z", self.mount_point], capture_output=True)
        try:
            self._process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._kill()
        self._process = None

    def close(self) -> None:
        self.unmount()
        shutil.rmtree(self._control_dir, ignore_errors=True)

    def __enter__(self) -> PowerLossFS:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- the fault -------------------------------------------------------------------------------------
    def power_failure(self, tear: bool = False, seed: int = 0) -> dict[str, Any]:
        """Lose every unsynced page (with ``tear``, a seeded random half of them reach the disk first),
        then come back: the mount shows only what was durable. Descriptors and maps opened before are
        dead (ENOTCONN), as they would be after a reboot. Returns what was lost."""
        lost = self.cut_power(tear=tear, seed=seed)
        self.restore()
        return lost

    def cut_power(self, tear: bool = False, seed: int = 0) -> dict[str, Any]:
        """The first half of ``power_failure``: the unsynced pages are gone (or torn) and from now on
        every operation on the mount fails (EIO), so nothing the dying process still does reaches
        the disk; ``restore()`` brings the mount back. For a cut from inside the process under
        test (a hook in the middle of a commit), where its own error handling runs afterwards."""
        if self._process is None:
            raise PowerLossUnavailable("the power-loss filesystem is not mounted")
        if self.power_is_off:
            return {}
        lost = self._request("unsynced")
        torn = self._request("tear", seed=seed) if tear else self._request("halt")
        self.power_is_off = True
        return {**lost, **torn}

    def restore(self) -> None:
        """After ``cut_power``: the FUSE process (the only copy of the unsynced pages) dies, and the
        mount comes back with what was durable."""
        if not self.power_is_off:
            raise RuntimeError("restore() without cut_power() first")
        self._kill()
        subprocess.run(["fusermount3", "-u", "-z", self.mount_point], capture_output=True)
        deadline = time.monotonic() + 5
        while os.path.ismount(self.mount_point) and time.monotonic() < deadline:
            time.sleep(0.01)
        self.power_failures += 1
        self.power_is_off = False
        self.mount()

    def unsynced_bytes(self) -> int:
        """Bytes written to the mount and not yet fsynced (they would be lost by a power failure now)."""
        return int(self._request("unsynced")["bytes"])

    # -- internals -------------------------------------------------------------------------------------
    def _request(self, command: str, **args: Any) -> dict[str, Any]:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(CONTROL_TIMEOUT)
            sock.connect(self._control)
            sock.sendall(json.dumps({"command": command, **args}).encode() + b"\n")
            data = b""
            while not data.endswith(b"\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        reply = json.loads(data)
        if "error" in reply:
            raise RuntimeError(f"power-loss filesystem: {command}: {reply['error']}")
        return reply

    def _kill(self) -> None:
        if self._process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            self._process.kill()
        self._process.wait(timeout=10)
        self._process = None

    def _log_tail(self) -> str:
        try:
            with open(self._log_path, "rb") as f:
                text = f.read().decode(errors="replace").strip()
        except OSError:
            return "(no log)"
        return text[-800:] or "(no output)"


def _check_available() -> None:
    import importlib.util

    if not os.path.exists("/dev/fuse"):
        raise PowerLossUnavailable("/dev/fuse does not exist (no FUSE in this kernel or container)")
    if shutil.which("fusermount3") is None:
        raise PowerLossUnavailable("fusermount3 is not installed (bash chaos/install-fuse.sh)")
    if importlib.util.find_spec("mfusepy") is None:
        raise PowerLossUnavailable("the mfusepy package is not installed (pip install -e '.[test]')")


@contextlib.contextmanager
def power_loss_fs(folder: str | os.PathLike[str]) -> Iterator[PowerLossFS]:
    """Mount a power-loss filesystem in ``folder`` (``folder/mnt`` over the backing ``folder/disk``),
    unmounted at exit. Raises PowerLossUnavailable where FUSE cannot mount."""
    fs = PowerLossFS(folder)
    try:
        fs.mount()
        yield fs
    finally:
        fs.close()


# -- the experiment ---------------------------------------------------------------------------------------
EXPERIMENT_STORES = ("lmdb", "duckdb", "tinydb")
#: Where the power fails, by phase (see run_power_loss_experiment).
PHASES = ("commits", "compaction", "recovery")
#: The coordinator log's compaction threshold in the compaction phase: a compaction every couple of
#: transactions (the default, 20,000 records, is never reached by an experiment).
COMPACTION_PHASE_RECORDS = 4
#: Store calls every recovery makes on three stores at least (a flush per store after its redo, one
#: per store at the checkpoint): the power fails after a seeded one of the first this many.
RECOVERY_CALLS = 6


def open_stores(workdir: str) -> dict[str, Any]:
    """LMDB, DuckDB and TinyDB in ``workdir``, unsynced (sync=False): under a MemoryManager the
    coordinator log is what makes a commit durable."""
    from memsys.adapters.duckdb_store import DuckDBMemoryAdapter
    from memsys.adapters.lmdb_store import LMDBMemoryAdapter
    from memsys.adapters.tinydb_store import TinyDBMemoryAdapter

    return {"lmdb": LMDBMemoryAdapter(path=os.path.join(workdir, "lmdb"), sync=False),
            "duckdb": DuckDBMemoryAdapter(path=os.path.join(workdir, "items.duckdb"), sync=False),
            "tinydb": TinyDBMemoryAdapter(path=os.path.join(workdir, "items.json"), sync=False)}


def open_manager(workdir: str, **options: Any) -> Any:
    """``open_stores``' stores through one MemoryManager with its coordinator log in ``workdir``."""
    from memsys.application.manager import MemoryManager

    return MemoryManager(open_stores(workdir), transaction_log=os.path.join(workdir, "txlog"), **options)


def _content(tx_id: str | None, store: str) -> str:
    return f"{tx_id} wrote this to {store}"


def _write_transaction(manager: Any, tx_id: str, writes: dict[str, list[str]]) -> None:
    from memsys.domain.model import MemoryItem, MemoryType

    with manager.with_transaction(sorted(writes)):
        for store, ids in writes.items():
            for item_id in ids:
                manager.adapters[store].store(MemoryItem(
                    id=item_id, content=_content(tx_id, store), memory_type=MemoryType.EPISODIC,
                    metadata={"tx": tx_id}))


def read_present(manager: Any) -> dict[str, dict[str, str | None]]:
    """Per store, every id it holds and the transaction whose value it holds (from the ``tx`` tag
    ``_write_transaction`` stores; None when the value is not what that transaction wrote)."""
    present: dict[str, dict[str, str | None]] = {}
    for name, adapter in manager.adapters.items():
        held: dict[str, str | None] = {}
        for item in adapter.iter_items():
            tx_id = (item.metadata or {}).get("tx")
            held[item.id] = tx_id if item.content == _content(tx_id, name) else None
        present[name] = held
    return present


def judge_power_loss(history: Any, present: Any) -> dict[str, Any]:
    """The experiment's verdict on ``history`` (TransactionRecords) against what the stores hold
    (``read_present``): memsys.testing.history.check_history, the set checker and the
    all-or-nothing checker, judge it; the figures reported are theirs."""
    from memsys.testing.history import check_history

    verdict = check_history(history, present)
    return {"attempted": verdict.transactions.attempted, "acknowledged": verdict.transactions.acknowledged,
            "unknown": verdict.transactions.unknown, "recovered": len(verdict.transactions.recovered),
            "lost": verdict.lost, "partial": verdict.partial,
            "unexpected": verdict.unexpected, "explain": verdict.explain(), "valid": verdict.valid}


def _quietly(close: Callable[[], Any]) -> None:
    previous = logging.root.manager.disable
    logging.disable(logging.CRITICAL)  # closes after a power failure reach a dead mount: expected
    try:
        with contextlib.suppress(Exception):
            close()
    finally:
        logging.disable(previous)


def _abandon(manager: Any) -> None:
    """What memsys.testing.crash.abandon does, with each close on its own: after a power failure the
    old mount is gone and a close may fail (ENOTCONN); that must not keep the others open."""
    _quietly(manager.coordinator.log.close)
    _abandon_stores(manager.adapters)


def _abandon_stores(stores: dict[str, Any]) -> None:
    for adapter in stores.values():
        adapter._coordinator = None
        _quietly(adapter.close)


class _PowerLossRun:
    """One experiment: a manager at a time on the mount, the history, and where the power failed."""

    def __init__(self, fs: PowerLossFS, seed: int, *, tear: bool, phase: str,
                 open_stores: Callable[[str], dict[str, Any]],
                 plan_writes: Callable[[random.Random, str], dict[str, list[str]]] | None,
                 compact_records: int) -> None:
        from memsys.testing.history import TransactionRecord

        self._record = TransactionRecord
        self.fs, self.seed, self.tear, self.phase = fs, seed, tear, phase
        self.rng = random.Random(seed)
        self.open_stores, self.plan_writes, self.compact_records = open_stores, plan_writes, compact_records
        self.workdir = os.path.join(fs.mount_point, "stores")
        self.history: dict[str, Any] = {}
        self.kinds: dict[str, int] = {}
        self.manager: Any = None
        self.stores: dict[str, Any] = {}
        self.refused: str | None = None
        self.recovery_failures: list[str] = []
        self.compactions = self.compactions_cut = self.recoveries = self.recoveries_cut = self.redone = 0
        self._compaction_cut: tuple[int, str, str | None] | None = None  # (compaction number, where, store)

    # -- the power -----------------------------------------------------------------------------------
    def cut(self, kind: str) -> None:
        """The power fails now, from inside the process (a hook): nothing it does afterwards reaches
        the disk; SimulatedCrash stops it (a BaseException: nothing in memsys catches it)."""
        from memsys.testing.crash import SimulatedCrash

        self.fs.cut_power(tear=self.tear, seed=self.seed * 1009 + self.fs.power_failures)
        self.kinds[kind] = self.kinds.get(kind, 0) + 1
        raise SimulatedCrash(kind)

    def power_failure(self, kind: str) -> None:
        """The power fails (unless a hook already cut it), the power comes back, and the dead
        process's objects are dropped (their closes reach dead descriptors)."""
        if not self.fs.power_is_off:
            self.fs.cut_power(tear=self.tear, seed=self.seed * 1009 + self.fs.power_failures)
            self.kinds[kind] = self.kinds.get(kind, 0) + 1
        # Dropped after the mount is back: their closes then fail on dead descriptors (ENOTCONN); on a
        # mount that fails everything (EIO) some native engines abort the process in a close (Kuzu).
        self.fs.restore()
        if self.manager is not None:
            _abandon(self.manager)
        else:
            _abandon_stores(self.stores)
        self.manager, self.stores = None, {}

    # -- opening: recovery runs ------------------------------------------------------------------------
    def open(self, recovery_cut_at: int | None = None) -> bool:
        """Open the stores and a manager on them (recovery runs). With ``recovery_cut_at`` k, the
        power fails right after recovery's k-th store call (apply_prepared or flush, on any store):
        then the power comes back and this returns False. False also when the stores refuse to open
        (``refused`` says why)."""
        from memsys.application.manager import MemoryManager
        from memsys.domain.errors import MemsysError
        from memsys.testing.crash import SimulatedCrash

        from memsys.adapters.foreign_store import as_participant

        try:
            # As the manager would see them (a store without the transaction port is wrapped), so the
            # hooks below sit on the calls recovery and compaction make.
            stores = {name: as_participant(name, store) for name, store in self.open_stores(self.workdir).items()}
        except MemsysError as exc:  # the stores refuse what the power loss left: a finding
            self.refused = f"opening the stores after {self.fs.power_failures} power failures: " \
                           f"{type(exc).__name__}: {exc}"
            return False
        fired: list[str] = []
        if recovery_cut_at is not None:
            calls = [0]
            for name, store in stores.items():
                for method in ("apply_prepared", "flush"):
                    setattr(store, method, self._cut_after(getattr(store, method), name, method, calls,
                                                           recovery_cut_at, fired))
        self.recoveries += 1
        try:
            manager = MemoryManager(stores, transaction_log=os.path.join(self.workdir, "txlog"),
                                    compact_records=self.compact_records)
        except (SimulatedCrash, Exception) as exc:
            if fired:  # the power failed mid-recovery; its cleanup may have met the dead mount first
                self.recoveries_cut += 1
                self.stores = stores
                self.power_failure(fired[0])
                return False
            _abandon_stores(stores)
            if isinstance(exc, MemsysError):
                self.refused = f"recovery after {self.fs.power_failures} power failures: {type(exc).__name__}: {exc}"
                return False
            raise
        finally:
            for store in stores.values():  # the wrappers are for this recovery only
                for method in ("apply_prepared", "flush"):
                    vars(store).pop(method, None)
        self.manager, self.stores = manager, stores
        report = manager.last_recovery
        self.redone += len(report.redone)
        if report.failed_stores:
            self.recovery_failures.append(f"recovery {self.recoveries}: {report.failed_stores}")
        if self.phase == "compaction":
            self._watch_compactions()
        return True

    def _cut_after(self, original: Callable[..., Any], store: str, method: str, calls: list[int], at: int,
                   fired: list[str]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            result = original(*args, **kwargs)
            calls[0] += 1
            if calls[0] == at:
                fired.append(f"during recovery (after {method} on {store})")
                self.cut(fired[0])
            return result
        return call

    def reopen(self) -> bool:
        """Open after a power failure. In the recovery phase the power fails during recovery first
        (once or twice in a row, at a seeded store call), and by turns once more right after a
        recovery completed: each later recovery must still complete everything decided."""
        if self.phase != "recovery":
            return self.open()
        for _ in range(1 + (self.rng.random() < 0.4)):
            if self.open(recovery_cut_at=self.rng.randint(1, RECOVERY_CALLS)):
                return True  # fewer store calls than the cut point: recovery completed
            if self.refused:
                return False
        if not self.open():
            return False
        if self.rng.random() < 0.5:  # what recovery redid must be durable before its checkpoint
            self.power_failure("right after recovery")
            return self.open()
        return True

    # -- compaction --------------------------------------------------------------------------------------
    def _watch_compactions(self) -> None:
        """Count the open manager's log compactions, and cut the power at the armed one: after one
        store's flush (the checkpoint is under way), or right after the log was rewritten."""
        coordinator = self.manager.coordinator
        checkpoint, compact = coordinator._checkpoint, coordinator.log.compact
        within = [False]

        def counted_checkpoint() -> None:
            self.compactions += 1
            within[0] = True
            try:
                checkpoint()
            finally:
                within[0] = False

        def compact_then_maybe_cut(*args: Any, **kwargs: Any) -> None:
            compact(*args, **kwargs)
            if self._compaction_cut == (self.compactions, "compact", None):
                self.cut("right after a log compaction")

        coordinator._checkpoint = counted_checkpoint
        coordinator.log.compact = compact_then_maybe_cut
        for name, store in self.stores.items():
            def flush_then_maybe_cut(_flush: Callable[[], None] = store.flush, _name: str = name) -> None:
                _flush()
                if within[0] and self._compaction_cut == (self.compactions, "flush", _name):
                    self.cut(f"during a log compaction (after {_name}'s flush)")
            store.flush = flush_then_maybe_cut

    def arm_compaction_cut(self) -> None:
        where = self.rng.choice([("flush", n) for n in sorted(self.stores)] + [("compact", None)])
        self._compaction_cut = (self.compactions + self.rng.randint(1, 2), *where)

    # -- the workload ------------------------------------------------------------------------------------
    def commit(self, tx_id: str, writes: dict[str, list[str]]) -> str:
        """Run one transaction; what its client learned: ok, fail, or info (the power went)."""
        from memsys.domain.errors import CommitIncompleteError, MemsysError
        from memsys.testing.crash import SimulatedCrash

        try:
            _write_transaction(self.manager, tx_id, writes)
        except SimulatedCrash:
            return "info"
        except CommitIncompleteError:  # decided: recovery owes it
            outcome = "ok"
        except MemsysError:
            outcome = "fail"
        else:
            outcome = "ok"
        return "info" if self.fs.power_is_off else outcome  # a client that lost its power learned nothing

    def run(self, transactions: int, power_failures: int) -> None:
        from memsys.application.transactions import STEPS

        os.makedirs(self.workdir, exist_ok=True)
        if not self.open():
            return
        points: dict[int, str | None] = {}
        if self.phase != "compaction":  # between transactions or in the middle of a commit, at a seeded step
            for n in sorted(self.rng.sample(range(transactions), min(power_failures, transactions))):
                points[n] = self.rng.choice((None, *STEPS))
        cuts_left = power_failures if self.phase == "compaction" else 0
        if cuts_left:
            self.arm_compaction_cut()
        for n in range(transactions):
            tx_id = f"s{self.seed}-{self.phase[0]}{n:04d}"
            if self.plan_writes is not None:
                writes = self.plan_writes(self.rng, tx_id)
            else:
                names = sorted(self.stores)
                chosen = sorted(self.rng.sample(names, self.rng.randint(2, len(names))))
                writes = {s: [f"{tx_id}-{s}-{j}" for j in range(self.rng.randint(1, 2))] for s in chosen}
            record = self.history[tx_id] = self._record(tx_id, writes)
            step = points.get(n)
            if step is not None:
                def hook(name: str, step: str = step) -> None:
                    if name == step:
                        self.cut(f"mid-commit ({step})")
                self.manager.coordinator.crash_hook = hook
            record.outcome = self.commit(tx_id, writes)
            if self.fs.power_is_off and self._compaction_cut is not None:
                self.compactions_cut += 1
                cuts_left -= 1
                self._compaction_cut = None
            if n in points or self.fs.power_is_off:
                self.power_failure("between transactions")
                if not self.reopen():
                    return
                if cuts_left:
                    self.arm_compaction_cut()
        self._compaction_cut = None
        self.manager.close()  # a close is not a sync: the power fails once more after it
        self.power_failure("after close")
        self.open()

    def summary(self) -> dict[str, Any]:
        figures: dict[str, Any] = {
            "attempted": len(self.history), "acknowledged": sum(r.outcome == "ok" for r in self.history.values()),
            "unknown": sum(r.outcome == "info" for r in self.history.values()), "recovered": 0,
            "lost": [], "partial": [], "unexpected": [], "explain": "", "valid": True}
        if self.manager is not None:
            from memsys.domain.errors import MemsysError

            try:
                figures = judge_power_loss(self.history, read_present(self.manager))
            except MemsysError as exc:  # a store opened but cannot read what the power loss left
                self.refused = f"reading the stores back: {type(exc).__name__}: {exc}"
            finally:
                manager, self.manager = self.manager, None
                _quietly(manager.close)
        return {"seed": self.seed, "tear": self.tear, "phase": self.phase, **figures, "refused": self.refused,
                "power_failures": self.fs.power_failures, "fault_kinds": dict(self.kinds),
                "compactions": self.compactions, "compactions_cut": self.compactions_cut,
                "recoveries": self.recoveries, "recoveries_cut": self.recoveries_cut, "redone": self.redone,
                "recovery_failures": self.recovery_failures,
                "ok": bool(figures["valid"]) and not (self.refused or self.recovery_failures)}


def run_power_loss_experiment(folder: str | os.PathLike[str], seed: int, transactions: int, *,
                              power_failures: int = 2, tear: bool = False, phase: str = "commits",
                              open_stores: Callable[[str], dict[str, Any]] = open_stores,
                              plan_writes: Callable[[random.Random, str], dict[str, list[str]]] | None = None,
                              compact_records: int | None = None) -> dict[str, Any]:
    """Run ``transactions`` cross-store transactions on a power-loss mount over the stores
    ``open_stores`` opens (LMDB, DuckDB, TinyDB unsynced by default), each writing fresh ids to
    some of them (``plan_writes(rng, tx_id)``, else two or more stores at random), with
    ``power_failures`` power failures where ``phase`` says:

    * ``commits``: at seeded transactions, between two of them or in the middle of a commit at a
      seeded protocol step (memsys.application.transactions.STEPS);
    * ``compaction``: the log compacts every couple of transactions (``compact_records``, default
      COMPACTION_PHASE_RECORDS); the power fails at seeded compactions, after one store's flush
      (mid-checkpoint) or right after the log was rewritten;
    * ``recovery``: as in ``commits``, then the power fails again while the reopening's recovery
      redoes the work (after a seeded store call; sometimes twice in a row), and by turns right
      after a recovery completed.

    A power failure from a hook is the moment itself: the mount fails every operation from then on
    (PowerLossFS.cut_power), so nothing the dying process still does reaches the disk. Its objects
    are dropped and the stores reopen (recovery runs). At the end the manager closes, the power
    fails once more (a close is not a sync), and after reopening the history is judged by
    memsys.testing.history.check_history (set checker and all-or-nothing checker).

    Returns the checker's figures (``attempted``, ``acknowledged``, ``lost``, ``partial``,
    ``unexpected`` as transaction ids, ``explain``), ``refused`` (why the stores would not reopen or
    be read after a power failure; the experiment stops there) or None, ``recovery_failures``,
    ``power_failures``, ``fault_kinds`` (power failures by where), ``compactions`` /
    ``compactions_cut`` (during the workload), ``recoveries`` / ``recoveries_cut``, ``redone``
    (transactions recovery redid), and ``ok``. Raises PowerLossUnavailable where FUSE cannot mount."""
    if phase not in PHASES:
        raise ValueError(f"unknown power-loss phase {phase!r}; one of {PHASES}")
    if compact_records is None:
        compact_records = COMPACTION_PHASE_RECORDS if phase == "compaction" else 20_000
    with power_loss_fs(folder) as fs:
        run = _PowerLossRun(fs, seed, tear=tear, phase=phase, open_stores=open_stores, plan_writes=plan_writes,
                            compact_records=compact_records)
        try:
            run.run(transactions, power_failures)
            return run.summary()
        finally:
            if run.manager is not None:
                _abandon(run.manager)
            elif run.stores:
                _abandon_stores(run.stores)
