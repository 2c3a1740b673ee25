"""Operator tools on store specs (``memsys.specs``): inspect, diff, repair and recover.

    memsys inspect lmdb:data/lmdb                      count, samples, capabilities, size, health, digest
    memsys diff lmdb:data/lmdb duckdb:data/items.duckdb
    memsys repair lmdb:data/lmdb duckdb:data/items.duckdb --dry-run
    memsys repair lmdb:data/lmdb duckdb:data/items.duckdb [--policy newest|a|b] [--delete-extra]
    memsys recover --log data/txlog lmdb:data/lmdb duckdb:data/items.duckdb [--dry-run]

Each prints readable tables, or JSON with ``--json``. Exit status: 0 when all is well (healthy,
equal, repaired, recovered), 1 when the tool found something (unhealthy, different, changes a
dry run would make, recovery incomplete), 2 for a bad argument or a store that cannot be opened.
The tools open existing stores only: a path with nothing at it is refused, never created.

``register(subparsers)`` adds the four sub-commands to the ``memsys`` parser; ``main(argv)``
runs them on their own.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from typing import Any

from memsys.application.digests import DigestIndex, canonical
from memsys.domain.errors import InvalidInputError, MemsysError
from memsys.specs import StoreSpec, parse_named_spec, parse_spec

POLICIES = ("newest", "a", "b")


# ---------------------------------------------------------------------------------------- opening


def _check_exists(spec: StoreSpec) -> None:
    """Tools look at stores that exist: an adapter creates a store at a new path, and a typo must
    not leave an empty store behind."""
    if spec.path is not None and not os.path.lexists(spec.path):
        raise InvalidInputError(f"no store at {spec.path!r} (from spec {spec.text!r})")


def open_existing(spec: StoreSpec | str) -> Any:
    spec = parse_spec(spec)
    _check_exists(spec)
    return spec.open()


@contextlib.contextmanager
def _opened(*specs: StoreSpec) -> Iterator[list[Any]]:
    stores: list[Any] = []
    try:
        for spec in specs:
            stores.append(open_existing(spec))
        yield stores
    finally:
        for store in reversed(stores):
            with contextlib.suppress(MemsysError):
                store.close()


def _iter_items(store: Any) -> Iterator[Any]:
    """Every item of a store: ``iter_items()``, or ``search({})`` for a protocol-only store."""
    scan = getattr(store, "iter_items", None)
    return iter(scan() if callable(scan) else store.search({}))


def _canonical(item: Any) -> bytes:
    return canonical(item)


def _same_store(a: StoreSpec, b: StoreSpec) -> bool:
    if a.server is not None or b.server is not None:
        return a == b
    return a.path is not None and b.path is not None and os.path.realpath(a.path) == os.path.realpath(b.path)


def disk_usage(path: str | None) -> int | None:
    """Bytes on disk of a store: the folder's files, or the file and its side files (PATH.*, such
    as a journal; not memsys' lock file)."""
    if path is None or not os.path.lexists(path):
        return None
    if os.path.isdir(path):
        total = 0
        for root, _dirs, files in os.walk(path):
            for name in files:
                with contextlib.suppress(OSError):
                    total += os.lstat(os.path.join(root, name)).st_size
        return total
    folder, base = os.path.split(os.path.abspath(path))
    total = os.lstat(path).st_size
    with contextlib.suppress(OSError):
        for name in os.listdir(folder):
            side = os.path.join(folder, name)
            if name.startswith(base + ".") and not name.endswith(".memsys-lock") and os.path.isfile(side):
                total += os.lstat(side).st_size
    return total


# ---------------------------------------------------------------------------------------- inspect


def inspect_store(spec: StoreSpec | str, *, sample: int = 5) -> dict[str, Any]:
    """What ``memsys inspect`` reports. Never raises for a broken store: ``healthy`` is False and
    ``error`` says why (a damaged file, a locked path, a missing store)."""
    spec = parse_spec(spec)
    report: dict[str, Any] = {"spec": str(spec), "backend": spec.backend, "path": spec.path,
                              "server": spec.server, "on_disk_bytes": disk_usage(spec.path),
                              "healthy": False, "error": None, "count": None, "capabilities": [],
                              "sample": [], "digest": None}
    store = None
    try:
        store = open_existing(spec)
        report["adapter"] = type(store).__name__
        report["capabilities"] = sorted(getattr(c, "value", str(c)) for c in getattr(store, "capabilities", ()))
        items = sorted(_iter_items(store), key=lambda i: i.id)  # a full read: proves every record decodes
        counter = getattr(store, "count", None)
        report["count"] = counter() if callable(counter) else len(items)
        report["sample"] = [{"id": i.id, "type": i.memory_type.value, "version": i.version,
                             "bytes": len(_canonical(i))} for i in items[:sample]]
        index = DigestIndex(256)
        index.put_many(items)
        report["digest"] = index.root()  # equal digests, equal stores: compare two inspects by eye
        if report["count"] != len(items):
            report["error"] = f"count() says {report['count']} items but a scan read {len(items)}"
        else:
            report["healthy"] = True
    except MemsysError as exc:
        report["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        if store is not None:
            with contextlib.suppress(MemsysError):
                store.close()
    return report


def _cmd_inspect(args: argparse.Namespace) -> int:
    if args.sample < 0:
        raise InvalidInputError(f"--sample must be >= 0, got {args.sample}")
    report = inspect_store(args.spec, sample=args.sample)
    if args.json:
        _print_json(report)
        return 0 if report["healthy"] else 1
    console, table_cls = _rich()
    table = table_cls(title=f"store {report['spec']}", show_header=False)
    table.add_column("field")
    table.add_column("value")
    health = "[green]healthy" if report["healthy"] else f"[red]UNHEALTHY: {report['error']}"
    table.add_row("health", health)
    table.add_row("adapter", report.get("adapter") or "-")
    table.add_row("items", "-" if report["count"] is None else str(report["count"]))
    table.add_row("capabilities", ", ".join(report["capabilities"]) or "-")
    table.add_row("on disk", "-" if report["on_disk_bytes"] is None else _bytes(report["on_disk_bytes"]))
    table.add_row("digest", report["digest"] or "-")
    console.print(table)
    if report["sample"]:
        samples = table_cls(title=f"first {len(report['sample'])} items by id")
        for column in ("id", "type", "version", "bytes"):
            samples.add_column(column)
        for row in report["sample"]:
            samples.add_row(row["id"], row["type"], str(row["version"]), str(row["bytes"]))
        console.print(samples)
    return 0 if report["healthy"] else 1


# ---------------------------------------------------------------------------------------- diff


@dataclasses.dataclass
class DiffReport:
    """How two stores differ. ``versions`` maps every differing id to (version in A, in B),
    None where a side lacks it."""

    only_a: list[str] = dataclasses.field(default_factory=list)
    only_b: list[str] = dataclasses.field(default_factory=list)
    newer_a: list[str] = dataclasses.field(default_factory=list)  # both hold it; A's version is newer
    newer_b: list[str] = dataclasses.field(default_factory=list)
    conflicting: list[str] = dataclasses.field(default_factory=list)  # same version, different content
    versions: dict[str, tuple[int | None, int | None]] = dataclasses.field(default_factory=dict)
    items_a: int = 0
    items_b: int = 0
    buckets: int = 0
    differing_buckets: int = 0
    compared_items: int = 0  # items compared one by one (those of differing buckets)

    @property
    def equal(self) -> bool:
        return not (self.only_a or self.only_b or self.newer_a or self.newer_b or self.conflicting)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["versions"] = {k: list(v) for k, v in self.versions.items()}
        data["equal"] = self.equal
        return data


def digest_diff(store_a: Any, store_b: Any, buckets: int = 256) -> DiffReport:
    """Compare two stores by digests (``memsys.application.digests``): ids are hashed into
    ``buckets`` ranges, each side gets a digest per range over (id, version, content hash), and
    only the ranges whose digests differ are compared id by id.

    What this saves, honestly: a tool opens stores cold, with no digest index kept from their
    commits, so each side is read once in full (``iter_items()``) to build one; what is avoided
    is holding both stores' items and comparing every id: items are reduced to small entries as
    they are read. A long-lived ``SyncManager`` keeps its indexes current from commits, and there
    a comparison reads only the differing ids (benchmarks/sync_digest.py). Changes nothing.
    """
    from memsys.application.digests import check_buckets, compare

    check_buckets(buckets)
    index_a = DigestIndex.scan(store_a, buckets)
    index_b = DigestIndex.scan(store_b, buckets)
    found = compare(index_a, index_b)
    return DiffReport(only_a=found.only_a, only_b=found.only_b, newer_a=found.newer_a, newer_b=found.newer_b,
                      conflicting=found.conflicting, versions=found.versions, items_a=len(index_a),
                      items_b=len(index_b), buckets=buckets, differing_buckets=found.differing_buckets,
                      compared_items=found.compared_entries)


def _open_pair(text_a: str, text_b: str) -> tuple[StoreSpec, StoreSpec]:
    a, b = parse_spec(text_a), parse_spec(text_b)
    if _same_store(a, b):
        raise InvalidInputError(f"{a.text!r} and {b.text!r} are the same store")
    return a, b


def _diff_rows(report: DiffReport) -> list[tuple[str, str, str, str]]:
    kinds = (("only in A", report.only_a), ("only in B", report.only_b), ("newer in A", report.newer_a),
             ("newer in B", report.newer_b), ("conflicting (same version)", report.conflicting))
    rows = []
    for kind, ids in kinds:
        for item_id in ids:
            va, vb = report.versions[item_id]
            rows.append((item_id, kind, "-" if va is None else str(va), "-" if vb is None else str(vb)))
    return rows


def _cmd_diff(args: argparse.Namespace) -> int:
    spec_a, spec_b = _open_pair(args.spec_a, args.spec_b)
    with _opened(spec_a, spec_b) as (a, b):
        report = digest_diff(a, b, buckets=args.buckets)
    if args.json:
        _print_json({"a": str(spec_a), "b": str(spec_b), **report.to_dict()})
        return 0 if report.equal else 1
    console, table_cls = _rich()
    console.print(f"A = {spec_a}  ({report.items_a} items)\nB = {spec_b}  ({report.items_b} items)")
    console.print(f"{report.differing_buckets} of {report.buckets} digest buckets differ; "
                  f"{report.compared_items} items compared one by one")
    if report.equal:
        console.print("[green]equal")
        return 0
    table = table_cls(title="differences")
    for column in ("id", "difference", "version A", "version B"):
        table.add_column(column)
    for row in _diff_rows(report):
        table.add_row(*row)
    console.print(table)
    console.print(f"[red]{len(report.versions)} ids differ")
    return 1


# ---------------------------------------------------------------------------------------- repair


@dataclasses.dataclass(frozen=True)
class Change:
    """One change repair makes (or a dry run would make) to one store."""

    store: str  # "a" or "b"
    action: str  # "copy" (write the other side's item, keeping its version) or "delete"
    id: str
    from_version: int | None  # the version the store held (None: it lacked the id)
    to_version: int | None  # the version it holds after (None: deleted)
    reason: str


def plan_repair(diff: DiffReport, conflicts: dict[str, str], *, policy: str = "newest",
                delete_extra: bool = False) -> tuple[list[Change], list[str]]:
    """The changes that make the stores agree under ``policy``, and the ids left different by
    design (with policy a or b, ids only the other side holds, unless ``delete_extra``).
    ``conflicts`` maps each conflicting id to the side whose item wins ("a" or "b")."""
    if policy not in POLICIES:
        raise InvalidInputError(f"unknown repair policy {policy!r}; use one of {POLICIES}")
    if delete_extra and policy == "newest":
        raise InvalidInputError("--delete-extra needs --policy a or b (which store is the source of truth)")
    changes: list[Change] = []
    kept: list[str] = []

    def copy(to: str, item_id: str, reason: str) -> None:
        va, vb = diff.versions[item_id]
        before, after = (vb, va) if to == "b" else (va, vb)
        changes.append(Change(to, "copy", item_id, before, after, reason))

    for item_id in diff.only_a:
        if policy == "b":
            if delete_extra:
                changes.append(Change("a", "delete", item_id, diff.versions[item_id][0], None, "not in B"))
            else:
                kept.append(item_id)
        else:
            copy("b", item_id, "missing in B")
    for item_id in diff.only_b:
        if policy == "a":
            if delete_extra:
                changes.append(Change("b", "delete", item_id, diff.versions[item_id][1], None, "not in A"))
            else:
                kept.append(item_id)
        else:
            copy("a", item_id, "missing in A")
    for item_id in diff.newer_a:
        if policy == "b":
            copy("a", item_id, "B wins (policy b) over a newer version")
        else:
            copy("b", item_id, "stale in B" if policy == "newest" else "A wins (policy a)")
    for item_id in diff.newer_b:
        if policy == "a":
            copy("b", item_id, "A wins (policy a) over a newer version")
        else:
            copy("a", item_id, "stale in A" if policy == "newest" else "B wins (policy b)")
    for item_id in diff.conflicting:
        winner = policy if policy in ("a", "b") else conflicts[item_id]
        loser = "b" if winner == "a" else "a"
        why = f"conflict (same version): {winner.upper()} wins" + (
            " (later updated_at; A on a tie)" if policy == "newest" else f" (policy {policy})")
        copy(loser, item_id, why)
    changes.sort(key=lambda c: (c.store, c.id))
    return changes, sorted(kept)


def _conflict_winners(a: Any, b: Any, ids: Sequence[str]) -> dict[str, str]:
    """For conflicting ids, the side SyncManager's "newest" policy keeps: the later updated_at, A on
    a tie (the first sync, A to B, copies when A's updated_at >= B's)."""
    winners = {}
    for item_id in ids:
        item_a, item_b = a.retrieve(item_id), b.retrieve(item_id)
        winners[item_id] = "a" if item_a.updated_at >= item_b.updated_at else "b"
    return winners


@contextlib.contextmanager
def _quiet(logger: str) -> Iterator[None]:
    """Silence one logger's expected warning (a manager without a log, which repair needs none for:
    each copy is a complete write, and an interrupted repair is finished by running it again)."""
    target = logging.getLogger(logger)
    level = target.level
    target.setLevel(logging.ERROR)
    try:
        yield
    finally:
        target.setLevel(level)


def repair(spec_a: StoreSpec | str, spec_b: StoreSpec | str, *, policy: str = "newest",
           delete_extra: bool = False, dry_run: bool = False, buckets: int = 256) -> dict[str, Any]:
    """Make B and A agree (see ``plan_repair``). Copies keep their versions: they go through a
    MemoryManager's ``write_versions`` via SyncManager, which replays writes without stamping
    new versions. A dry run opens and reads the stores and writes nothing."""
    from memsys.application.manager import MemoryManager
    from memsys.application.sync import SyncManager

    spec_a, spec_b = _open_pair(str(spec_a) if isinstance(spec_a, StoreSpec) else spec_a,
                                str(spec_b) if isinstance(spec_b, StoreSpec) else spec_b)
    if policy not in POLICIES:
        raise InvalidInputError(f"unknown repair policy {policy!r}; use one of {POLICIES}")
    if delete_extra and policy == "newest":
        raise InvalidInputError("--delete-extra needs --policy a or b (which store is the source of truth)")
    result: dict[str, Any] = {"a": str(spec_a), "b": str(spec_b), "policy": policy, "delete_extra": delete_extra,
                              "dry_run": dry_run}
    with _opened(spec_a, spec_b) as (a, b):
        before = digest_diff(a, b, buckets=buckets)
        winners = _conflict_winners(a, b, before.conflicting) if policy == "newest" else {}
        changes, kept = plan_repair(before, winners, policy=policy, delete_extra=delete_extra)
        result.update(before=before.to_dict(), changes=[dataclasses.asdict(c) for c in changes], kept=kept)
        if dry_run or not changes:
            result.update(applied=False, after=before.to_dict())
            return result
        with _quiet("memsys.manager"):
            manager = MemoryManager({"a": a, "b": b})
        try:
            applied: set[tuple[str, str, str]] = set()
            if policy == "newest":
                sync = SyncManager(manager, policy="newest")
                for source, target in (("a", "b"), ("b", "a")):
                    applied.update((target, "copy", i) for i in sync.sync(source, target).copied)
            else:
                source, target = policy, "b" if policy == "a" else "a"
                sync = SyncManager(manager, policy="source")
                done = sync.sync(source, target, delete_extra=delete_extra)
                applied.update((target, "copy", i) for i in done.copied)
                applied.update((target, "delete", i) for i in done.deleted)
                if done.newer_in_target:  # the source of truth wins even over a newer version
                    items = manager.adapters[source].retrieve_many(done.newer_in_target)
                    manager.write_versions(target, [items[i] for i in done.newer_in_target])
                    applied.update((target, "copy", i) for i in done.newer_in_target)
            after = digest_diff(a, b, buckets=buckets)
        finally:
            manager.close()  # closes both stores; _opened's close is then a no-op
    planned = {(c.store, c.action, c.id) for c in changes}
    result.update(applied=True, after=after.to_dict(),
                  unplanned=sorted("/".join(x) for x in applied - planned),
                  not_applied=sorted("/".join(x) for x in planned - applied))
    return result


def _repair_ok(result: dict[str, Any]) -> bool:
    after = result["after"]
    remaining = set(after["versions"]) - set(result["kept"])
    return not remaining and not result.get("not_applied")


def _cmd_repair(args: argparse.Namespace) -> int:
    result = repair(args.spec_a, args.spec_b, policy=args.policy, delete_extra=args.delete_extra,
                    dry_run=args.dry_run, buckets=args.buckets)
    pending = bool(result["changes"]) if args.dry_run else not _repair_ok(result)
    if args.json:
        _print_json(result)
        return 1 if pending else 0
    console, table_cls = _rich()
    console.print(f"A = {result['a']}\nB = {result['b']}\npolicy: {args.policy}"
                  + (", deleting extras" if args.delete_extra else ""))
    if not result["changes"]:
        console.print("[green]nothing to repair: the stores agree" + (
            f" (except {len(result['kept'])} ids kept by the policy)" if result["kept"] else ""))
        return 0
    title = "changes a repair would make (dry run: nothing changed)" if args.dry_run else "changes made"
    table = table_cls(title=title)
    for column in ("store", "action", "id", "version before", "version after", "why"):
        table.add_column(column)
    for c in result["changes"]:
        table.add_row(c["store"].upper(), c["action"], c["id"], _v(c["from_version"]), _v(c["to_version"]),
                      c["reason"])
    console.print(table)
    if result["kept"]:
        console.print(f"left as they are (policy {args.policy}, no --delete-extra): {', '.join(result['kept'])}")
    if args.dry_run:
        console.print(f"{len(result['changes'])} changes pending; run without --dry-run to make them")
    elif pending:
        console.print(f"[red]the stores still differ after the repair: {sorted(result['after']['versions'])}"
                      + (f"; not applied: {result['not_applied']}" if result.get("not_applied") else ""))
    else:
        console.print(f"[green]{len(result['changes'])} changes made; the stores agree")
    return 1 if pending else 0


# ---------------------------------------------------------------------------------------- recover


def _check_log(path: str) -> str:
    from memsys.application.txlog import check_file_path

    path = check_file_path(path, "--log")
    if not os.path.isfile(path):
        raise InvalidInputError(f"no transaction log at {path!r}")
    return path


def _named_specs(texts: Sequence[str]) -> dict[str, StoreSpec]:
    named: dict[str, StoreSpec] = {}
    for text in texts:
        name, spec = parse_named_spec(text)
        if name in named:
            raise InvalidInputError(f"two stores are named {name!r}; name them: NAME=SPEC")
        for other_name, other in named.items():
            if _same_store(spec, other):
                raise InvalidInputError(f"stores {other_name!r} and {name!r} are the same store ({spec.text!r})")
        named[name] = spec
    return named


def _scan_summary(scan: Any) -> dict[str, Any]:
    return {
        "checkpoint_lsn": scan.checkpoint_lsn,
        "records": scan.records,
        "torn_tail": scan.torn_tail,
        "commits": [{"lsn": c["lsn"], "txid": c["txid"], "stores": sorted(c["ops"]),
                     "operations": sum(len(ops) for ops in c["ops"].values()),
                     "ended": c["lsn"] in scan.ended} for c in scan.commits],
        "presumed_aborted": [{"lsn": lsn, "txid": p.get("txid"), "stores": sorted(p.get("stores") or [])}
                             for lsn, p in ((p["lsn"], p) for p in scan.undecided)],
    }


def scan_log(log_path: str) -> dict[str, Any]:
    """What recovery would do, from the log alone (no store is opened, no lock taken): every
    commit after the last checkpoint is redone (idempotent: a store that has it keeps it), those
    without an end record were possibly not applied everywhere, and a prepare without a commit
    is presumed aborted."""
    from memsys.application.txlog import CoordinatorLog, read_dead_letters

    path = _check_log(log_path)
    log = CoordinatorLog(path)
    try:
        summary = _scan_summary(log.scan())
    finally:
        log.close()
    summary["log"] = path
    summary["dead_letters"] = [d.to_dict() for d in read_dead_letters(path)]
    return summary


def recover(log_path: str, specs: Sequence[str]) -> dict[str, Any]:
    """Open a MemoryManager over the stores with the log, which runs recovery, and report it."""
    from memsys.application.manager import MemoryManager

    path = _check_log(log_path)
    named = _named_specs(specs)
    if not named:
        raise InvalidInputError("recover needs the stores of the log: SPEC... or NAME=SPEC...")
    before = scan_log(path)  # for the stores and operations of each transaction; read only
    stores: dict[str, Any] = {}
    try:
        for name, spec in named.items():
            _check_exists(spec)
            stores[name] = spec.open()  # the manager names it
        manager = MemoryManager(stores, transaction_log=path)
    except BaseException:
        for store in stores.values():
            with contextlib.suppress(MemsysError):
                store.close()
        raise
    try:
        report = manager.last_recovery
    finally:
        manager.close()
    by_txid = {c["txid"]: c for c in before["commits"]}
    return {
        "log": path,
        "stores": {name: str(spec) for name, spec in named.items()},
        "ok": report.ok,
        "redone": [by_txid.get(t, {"txid": t}) for t in report.redone],
        "completed": list(report.completed),
        "presumed_aborted": list(report.undone),
        "failed_stores": dict(report.failed_stores),
        "dead_lettered": [d.to_dict() for d in report.dead_lettered],
        "dead_letters_waiting": report.dead_letters,
        "log_records": report.log_records,
        "seconds": round(report.seconds, 6),
    }


def _cmd_recover(args: argparse.Namespace) -> int:
    if args.dry_run:
        if args.specs:
            _named_specs(args.specs)  # checked, never opened
        summary = scan_log(args.log)
        if args.json:
            _print_json(summary)
            return 1 if summary["dead_letters"] else 0
        console, table_cls = _rich()
        console.print(f"log {summary['log']}: {summary['records']} records, checkpoint at lsn "
                      f"{summary['checkpoint_lsn']}" + (", torn last record (ignored)" if summary["torn_tail"] else ""))
        _commit_table(console, table_cls, "recovery would redo (dry run: no store opened)", summary["commits"])
        if summary["presumed_aborted"]:
            console.print("presumed aborted (prepared, never committed): "
                          + ", ".join(p["txid"] for p in summary["presumed_aborted"]))
        if summary["dead_letters"]:
            console.print(f"[red]{len(summary['dead_letters'])} dead letters wait (memsys dead-letters --log)")
        return 1 if summary["dead_letters"] else 0
    if not args.specs:
        raise InvalidInputError("recover needs the stores of the log (SPEC... or NAME=SPEC...), or --dry-run")
    result = recover(args.log, args.specs)
    if args.json:
        _print_json(result)
        return 0 if result["ok"] else 1
    console, table_cls = _rich()
    console.print(f"log {result['log']}: {result['log_records']} records; stores "
                  + ", ".join(f"{n}={s}" for n, s in result["stores"].items()))
    _commit_table(console, table_cls, "redone", result["redone"])
    if result["completed"]:
        console.print("completed (committed, not ended before): " + ", ".join(result["completed"]))
    if result["presumed_aborted"]:
        console.print("presumed aborted (prepared, never committed): " + ", ".join(result["presumed_aborted"]))
    for name, why in result["failed_stores"].items():
        console.print(f"[red]store {name} not recovered: {why}")
    for letter in result["dead_lettered"]:
        console.print(f"[red]dead-lettered {letter['id']}: {letter['error']}")
    if result["dead_letters_waiting"]:
        console.print(f"[red]{result['dead_letters_waiting']} dead letters wait (memsys dead-letters --log)")
    console.print("[green]recovered" if result["ok"] else "[red]recovery incomplete")
    return 0 if result["ok"] else 1


def _commit_table(console: Any, table_cls: Any, title: str, commits: list[dict[str, Any]]) -> None:
    if not commits:
        console.print(f"{title}: nothing")
        return
    table = table_cls(title=title)
    for column in ("lsn", "transaction", "stores", "operations", "ended"):
        table.add_column(column)
    for c in commits:
        table.add_row(_v(c.get("lsn")), c["txid"], ", ".join(c.get("stores", [])), _v(c.get("operations")),
                      "-" if "ended" not in c else ("yes" if c["ended"] else "no"))
    console.print(table)


# ---------------------------------------------------------------------------------------- output


def _rich() -> tuple[Any, Any]:
    from rich.console import Console
    from rich.table import Table

    # Wide enough for ids and specs when the output is a file or a pipe (rich assumes 80 there).
    return Console(width=None if sys.stdout.isatty() else 160, soft_wrap=True), Table


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, ensure_ascii=False, default=str))


def _bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{n} B" if unit == "B" else f"{size:.1f} {unit} ({n} B)"
        size /= 1024
    return f"{n} B"


def _v(value: Any) -> str:
    return "-" if value is None else str(value)


# ---------------------------------------------------------------------------------------- argparse


def _buckets(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--buckets", type=int, default=256, help="digest buckets (id hash ranges; default 256)")


def register(subparsers: Any) -> None:
    """Add inspect, diff, repair and recover to the ``memsys`` sub-command parsers."""
    inspect = subparsers.add_parser("inspect", help="a store's count, sample items, capabilities, size and health",
                                    description="Open a store by spec and report it. Exit 0 when healthy, 1 when "
                                    "it cannot be opened or read (damaged, locked, missing).")
    inspect.add_argument("spec", help="a store spec, e.g. lmdb:data/lmdb (see memsys.specs)")
    inspect.add_argument("--sample", type=int, default=5, help="how many items to show (default 5)")
    inspect.add_argument("--json", action="store_true", help="print JSON")
    inspect.set_defaults(func=_cmd_inspect)

    diff = subparsers.add_parser("diff", help="compare two stores by digests",
                                 description="Ids missing on each side, newer on one side, and conflicting "
                                 "(same version, different content). Exit 0 when equal, 1 when they differ.")
    diff.add_argument("spec_a", metavar="SPEC_A")
    diff.add_argument("spec_b", metavar="SPEC_B")
    _buckets(diff)
    diff.add_argument("--json", action="store_true", help="print JSON")
    diff.set_defaults(func=_cmd_diff)

    rep = subparsers.add_parser("repair", help="make two stores agree, keeping versions",
                                description="Copy items between two stores so they agree: by default the "
                                "newest version wins (a conflict, same version with different content, goes "
                                "to the later updated_at); --policy a or b makes that store the source of "
                                "truth. Every change is reported. Exit 0 when the stores agree after it (a "
                                "dry run: when nothing is pending), 1 otherwise.")
    rep.add_argument("spec_a", metavar="SPEC_A")
    rep.add_argument("spec_b", metavar="SPEC_B")
    rep.add_argument("--policy", choices=POLICIES, default="newest")
    rep.add_argument("--delete-extra", action="store_true",
                     help="with --policy a/b, delete what the source of truth lacks")
    rep.add_argument("--dry-run", action="store_true", help="report the changes, make none")
    _buckets(rep)
    rep.add_argument("--json", action="store_true", help="print JSON")
    rep.set_defaults(func=_cmd_repair)

    rec = subparsers.add_parser("recover", help="run crash recovery from a transaction log",
                                description="Open the stores with the coordinator log, which redoes what the "
                                "log decided, and report what was redone, completed, presumed aborted and "
                                "dead-lettered. Stores are named by backend, or NAME=SPEC. Exit 0 when every "
                                "logged write is in its store, 1 otherwise.")
    rec.add_argument("--log", required=True, help="the manager's transaction_log file")
    rec.add_argument("specs", nargs="*", metavar="SPEC", help="store specs, NAME=SPEC to name a store")
    rec.add_argument("--dry-run", action="store_true", help="read the log only: what recovery would redo")
    rec.add_argument("--json", action="store_true", help="print JSON")
    rec.set_defaults(func=_cmd_recover)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="memsys", description="memsys operator tools")
    register(parser.add_subparsers(dest="command", required=True))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one tool as ``memsys`` would (errors: one line on stderr, exit 2)."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except MemsysError as exc:
        print(f"memsys: error: {exc}", file=sys.stderr)
        return 2


__all__ = ["DiffReport", "Change", "digest_diff", "plan_repair", "repair", "inspect_store", "scan_log",
           "recover", "register", "main", "POLICIES"]


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
