"""Jepsen-style histories and the checkers that judge them.

A history is a list of operations as clients saw them: ``invoke`` when a
client starts one, then ``ok`` (acknowledged), ``fail`` (definitely did not
happen) or ``info`` (outcome unknown: the client crashed or timed out).

``check_transactions`` is a set checker extended to several stores: each
transaction adds fresh ids to some stores; after recovery every one of its
ids must be on every one of its stores, or none anywhere.

    lost        acknowledged, but missing (entirely or in part)
    partial     present on some of its stores or ids but not all: atomicity broken
    unexpected  present but never attempted, or present although it failed
    recovered   outcome unknown, and present in full (allowed)

Valid iff lost, partial and unexpected are all empty.

``check_all_or_nothing`` judges atomicity alone, whatever the clients learned:
each transaction's writes are on every one of its stores or on none, and it
says, per partial transaction, which store has which ids and which lack them.

``check_registers`` is a per-key register check: a read must never return a
version older than one already acknowledged before the read was invoked (a
stale read: an acknowledged write lost or rolled back, a replica or cache
behind), nor a version no write ever carried (a corrupt or invented read).

``check_counters`` finds lost updates in read-modify-write increments, and
``check_dirty_reads`` finds reads of values only aborted transactions wrote.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterable, Mapping
from typing import Any


@dataclasses.dataclass
class Op:
    """One history event. ``value`` holds what the op wrote or read."""

    process: int | str
    type: str  # invoke | ok | fail | info
    f: str
    value: Any = None
    key: str | None = None


@dataclasses.dataclass
class TransactionRecord:
    """What a transaction tried to write: ids per store, and what its client learned."""

    id: str
    writes: dict[str, list[str]]
    outcome: str = "info"  # ok | fail | info


class HistoryFile:
    """Append-only JSON lines, flushed per event: a SIGKILL keeps everything written before it."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self._file = open(self.path, "a", encoding="utf-8")

    def write(self, event: dict[str, Any]) -> None:
        self._file.write(json.dumps(event) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def read_transactions(paths: Iterable[str | os.PathLike[str]]) -> dict[str, TransactionRecord]:
    """Fold invoke/ok/fail/info events from history files into one record per transaction."""
    records: dict[str, TransactionRecord] = {}
    for path in paths:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
        for n, line in enumerate(lines):
            try:
                event = json.loads(line)
            except ValueError:
                if n == len(lines) - 1:
                    continue  # torn by the kill
                raise
            if "tx" not in event:
                continue  # another kind of event (register ops, read by read_ops)
            if event["type"] == "invoke":
                records[event["tx"]] = TransactionRecord(event["tx"], event["writes"])
            elif event["tx"] in records:
                records[event["tx"]].outcome = event["type"]
    return records


@dataclasses.dataclass
class TransactionCheck:
    attempted: int = 0
    acknowledged: int = 0
    failed: int = 0
    unknown: int = 0
    present: int = 0
    lost: list[str] = dataclasses.field(default_factory=list)
    partial: list[str] = dataclasses.field(default_factory=list)
    unexpected: list[str] = dataclasses.field(default_factory=list)
    recovered: list[str] = dataclasses.field(default_factory=list)

    @property
    def valid(self) -> bool:
        return not (self.lost or self.partial or self.unexpected)

    def counts(self) -> dict[str, int]:
        return {"attempted": self.attempted, "acknowledged": self.acknowledged, "failed": self.failed,
                "unknown": self.unknown, "present": self.present, "lost": len(self.lost),
                "partial": len(self.partial), "unexpected": len(self.unexpected), "recovered": len(self.recovered)}


def check_transactions(transactions: Mapping[str, TransactionRecord],
                       present: Mapping[str, set[str]]) -> TransactionCheck:
    """Judge transactions against the ids each store holds after recovery."""
    result = TransactionCheck(attempted=len(transactions))
    attempted_ids = {store: set() for store in present}
    for tx in transactions.values():
        hits = total = 0
        for store, ids in tx.writes.items():
            attempted_ids.setdefault(store, set()).update(ids)
            total += len(ids)
            hits += sum(1 for i in ids if i in present.get(store, ()))
        full, none = hits == total, hits == 0
        if tx.outcome == "ok":
            result.acknowledged += 1
        elif tx.outcome == "fail":
            result.failed += 1
        else:
            result.unknown += 1
        if full:
            result.present += 1
        if not full and not none:
            result.partial.append(tx.id)
        elif tx.outcome == "ok" and not full:
            result.lost.append(tx.id)
        elif tx.outcome == "fail" and full:
            result.unexpected.append(tx.id)
        elif tx.outcome == "info" and full:
            result.recovered.append(tx.id)
    for store, ids in present.items():
        strays = sorted(ids - attempted_ids.get(store, set()))
        result.unexpected.extend(f"{store}:{i}" for i in strays)
    return result


@dataclasses.dataclass
class AllOrNothingCheck:
    attempted: int = 0
    whole: list[str] = dataclasses.field(default_factory=list)
    none: list[str] = dataclasses.field(default_factory=list)
    #: transaction id -> {"present": {store: [ids]}, "missing": {store: [ids]}}
    partial: dict[str, dict[str, dict[str, list[str]]]] = dataclasses.field(default_factory=dict)
    #: writes later transactions overwrote, so they prove nothing either way
    superseded: int = 0

    @property
    def valid(self) -> bool:
        return not self.partial

    def counts(self) -> dict[str, int]:
        return {"attempted": self.attempted, "whole": len(self.whole), "none": len(self.none),
                "partial": len(self.partial), "superseded": self.superseded}

    def explain(self, limit: int = 5) -> str:
        lines = []
        for tx, parts in list(self.partial.items())[:limit]:
            lines.append(f"{tx}: on {_places(parts['present'])}, missing on {_places(parts['missing'])}")
        return "\n".join(lines)


def _places(where: Mapping[str, list[str]]) -> str:
    return ", ".join(f"{store} {ids[:3]}{'...' if len(ids) > 3 else ''}" for store, ids in sorted(where.items()))


def check_all_or_nothing(transactions: Mapping[str, TransactionRecord] | Iterable[TransactionRecord],
                         present: Mapping[str, Iterable[str] | Mapping[str, str | None]]) -> AllOrNothingCheck:
    """Atomicity across stores: every transaction on all its stores or none, whatever its outcome.

    ``present`` gives per store the ids it holds, either as a set or as a mapping of
    id to the transaction that last wrote it (the writer tag stored with the item). With
    writer tags an id rewritten by another transaction of the history is "superseded"
    and counts neither way; without them presence is all there is, so transactions
    should write fresh ids.
    """
    records = list(transactions.values()) if isinstance(transactions, Mapping) else list(transactions)
    writers: dict[tuple[str, str], set[str]] = {}
    for tx in records:
        for store, ids in tx.writes.items():
            for item_id in ids:
                writers.setdefault((store, item_id), set()).add(tx.id)
    tagged = {store: ids for store, ids in present.items() if isinstance(ids, Mapping)}
    plain = {store: set(ids) for store, ids in present.items() if not isinstance(ids, Mapping)}
    result = AllOrNothingCheck(attempted=len(records))
    for tx in records:
        found: dict[str, list[str]] = {}
        missing: dict[str, list[str]] = {}
        for store, ids in tx.writes.items():
            for item_id in ids:
                if store in tagged:
                    if item_id not in tagged[store]:
                        state = "missing"
                    else:
                        writer = tagged[store][item_id]
                        if writer == tx.id:
                            state = "present"
                        elif writer in writers.get((store, item_id), ()):
                            state = "superseded"
                        else:
                            state = "missing"  # someone else's value: this transaction's write is not there
                else:
                    state = "present" if item_id in plain.get(store, ()) else "missing"
                if state == "superseded":
                    result.superseded += 1
                else:
                    (found if state == "present" else missing).setdefault(store, []).append(item_id)
        if found and missing:
            result.partial[tx.id] = {"present": found, "missing": missing}
        elif found:
            result.whole.append(tx.id)
        elif missing:
            result.none.append(tx.id)
        else:
            result.whole.append(tx.id)  # every write superseded: nothing contradicts it
    return result



@dataclasses.dataclass
class HistoryCheck:
    """The set checker and the all-or-nothing checker over one history, as one verdict:
    ``lost`` and ``unexpected`` from ``check_transactions``, ``partial`` from either (the
    all-or-nothing checker also says which store holds which ids)."""

    transactions: TransactionCheck
    atomicity: AllOrNothingCheck

    @property
    def lost(self) -> list[str]:
        return list(self.transactions.lost)

    @property
    def partial(self) -> list[str]:
        return sorted(set(self.transactions.partial) | set(self.atomicity.partial))

    @property
    def unexpected(self) -> list[str]:
        return list(self.transactions.unexpected)

    @property
    def valid(self) -> bool:
        return self.transactions.valid and self.atomicity.valid

    def counts(self) -> dict[str, int]:
        return {**self.transactions.counts(), "partial": len(self.partial)}

    def explain(self, limit: int = 5) -> str:
        lines = []
        if self.lost:
            lines.append(f"lost (acknowledged, missing): {self.lost[:limit]}")
        if self.atomicity.partial:
            lines.append("partial: " + self.atomicity.explain(limit).replace("\n", "; "))
        elif self.partial:
            lines.append(f"partial: {self.partial[:limit]}")
        if self.unexpected:
            lines.append(f"unexpected (failed or never attempted, yet present): {self.unexpected[:limit]}")
        return "\n".join(lines)


def check_history(transactions: Mapping[str, TransactionRecord] | Iterable[TransactionRecord],
                  present: Mapping[str, Iterable[str] | Mapping[str, str | None]]) -> HistoryCheck:
    """Judge a transaction history with both checkers at once.

    ``present`` is as for ``check_all_or_nothing``: per store the ids it holds, or a mapping of
    id to the transaction whose value it holds (None: a value no transaction wrote, say a
    damaged one). For the set checker an id counts as present only when it holds the value of
    a transaction that wrote it, so a wrong value counts as missing, not as present."""
    records = {tx.id: tx for tx in (transactions.values() if isinstance(transactions, Mapping) else transactions)}
    writers: dict[tuple[str, str], set[str]] = {}
    for tx in records.values():
        for store, ids in tx.writes.items():
            for item_id in ids:
                writers.setdefault((store, item_id), set()).add(tx.id)
    plain: dict[str, set[str]] = {}
    for store, ids in present.items():
        if isinstance(ids, Mapping):
            # An id no transaction wrote stays in, so the set checker reports it as a stray.
            plain[store] = {i for i, writer in ids.items() if (store, i) not in writers or writer in writers[(store, i)]}
        else:
            plain[store] = set(ids)
    return HistoryCheck(check_transactions(records, plain), check_all_or_nothing(records, present))


@dataclasses.dataclass
class RegisterCheck:
    reads: int = 0
    keys: int = 0
    #: reads that returned a version older than one acknowledged before the read began
    stale: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    #: reads that returned a version no write of that key ever carried
    unexpected: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    @property
    def valid(self) -> bool:
        return not (self.stale or self.unexpected)

    def counts(self) -> dict[str, int]:
        return {"reads": self.reads, "keys": self.keys, "stale": len(self.stale),
                "unexpected": len(self.unexpected)}


@dataclasses.dataclass
class _Mutation:
    """A write or delete of one key, as the history shows it (positions are history indexes)."""

    kind: str  # write | delete
    version: Any
    invoked: int
    completed: int | None = None  # None while pending, and for "info": it may take effect any time
    status: str = "pending"  # pending | ok | fail | info


def check_registers(history: Iterable[Op]) -> RegisterCheck:
    """Stale reads, per key, in a history in real-time order.

    Ops: ``write`` (value: the version written; for a write whose version the client
    only learns on acknowledgement, the ``ok`` carries it), ``delete`` (value: the
    tombstone's version, or None), ``read`` (``ok`` value: the version read, None for
    absent). Versions of one key are ordered the way writes take effect (memsys stamps
    each commit with a larger version than any before). Each process has at most one
    operation outstanding, as in Jepsen; an ``info`` completion means it may have taken
    effect at any time after its invocation.

    A read is stale when it returns less than the newest write or delete acknowledged
    before it was invoked: a lower version than an acknowledged write; nothing, although
    an acknowledged write is newest and no delete could have come after it; or an old
    version although a delete was acknowledged since and no write of that version could
    have come after the delete. A read of a version no write of that key carried (and no
    write of unknown version could have) is unexpected.
    """
    result = RegisterCheck()
    mutations: dict[str, list[_Mutation]] = {}
    # The newest acknowledged mutation per key: (version, is_delete, mutation); an unversioned
    # delete takes the version it deleted, and is newer than it.
    newest: dict[str, tuple[float, bool, _Mutation]] = {}
    pending: dict[Any, tuple[Op, tuple[float, bool, _Mutation] | None, int, _Mutation | None]] = {}
    keys: set[str] = set()
    for position, op in enumerate(history):
        if op.key is None or op.f not in ("read", "write", "delete"):
            continue
        keys.add(op.key)
        if op.type == "invoke":
            mutation = None
            if op.f != "read":
                mutation = _Mutation(op.f, op.value, position)
                mutations.setdefault(op.key, []).append(mutation)
            pending[op.process] = (op, newest.get(op.key), position, mutation)
            continue
        invoke, floor, at, mutation = pending.pop(op.process, (op, None, position, None))
        if op.f != "read":
            if mutation is None:  # a completion without its invocation: take it as both
                mutation = _Mutation(op.f, op.value, position)
                mutations.setdefault(op.key, []).append(mutation)
            mutation.status = op.type
            mutation.completed = None if op.type == "info" else position
            if op.value is not None:
                mutation.version = op.value
            if op.type != "ok":
                continue
            if op.f == "write":
                if mutation.version is not None:
                    _advance(newest, op.key, (float(mutation.version), False, mutation))
            else:
                current = newest.get(op.key)
                stamp = float(mutation.version) if mutation.version is not None else \
                    (current[0] if current else float("-inf"))
                _advance(newest, op.key, (stamp, True, mutation), unversioned=mutation.version is None)
            continue
        if op.type != "ok":
            continue
        result.reads += 1
        seen = op.value
        event = {"key": op.key, "process": op.process, "read": seen, "index": position, "invoked": at}
        candidates = [m for m in mutations.get(op.key, ()) if m.status != "fail" and m.invoked < position]
        if seen is not None and not any(m.kind == "write" and (m.version == seen or m.version is None)
                                         for m in candidates):
            result.unexpected.append(event)
            continue
        if floor is None:
            continue
        version, deleted, last = floor

        def after_last(m: _Mutation) -> bool:  # could ``m`` have taken effect after ``last``?
            return m is not last and (m.completed is None or m.completed > last.invoked)

        if seen is None:
            if not deleted and not any(m.kind == "delete" and after_last(m) for m in candidates):
                result.stale.append({**event, "acknowledged": version})
        elif float(seen) < version or (deleted and float(seen) <= version):
            if deleted and any(m.kind == "write" and m.version == seen and after_last(m) for m in candidates):
                continue  # a write concurrent with the delete may have landed after it
            result.stale.append({**event, "acknowledged": version, "deleted": deleted})
    result.keys = len(keys)
    return result


def _advance(newest: dict[str, tuple[float, bool, _Mutation]], key: str,
             candidate: tuple[float, bool, _Mutation], *, unversioned: bool = False) -> None:
    current = newest.get(key)
    if current is None or candidate[0] > current[0] or (unversioned and candidate[0] >= current[0]):
        newest[key] = candidate


def read_ops(paths: Iterable[str | os.PathLike[str]]) -> list[Op]:
    """Op events (process, type, f, value, key) from history files, in file order; a torn
    last line (the kill) is skipped."""
    ops: list[Op] = []
    for path in paths:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
        for n, line in enumerate(lines):
            try:
                event = json.loads(line)
            except ValueError:
                if n == len(lines) - 1:
                    continue
                raise
            if "f" in event:
                ops.append(Op(event["process"], event["type"], event["f"], event.get("value"), event.get("key")))
    return ops


def check_counters(history: Iterable[Op], final: Mapping[str, int]) -> dict[str, Any]:
    """Lost updates: each acknowledged ``increment`` on a key must show in its final value.

    With only acknowledged increments counted, final == acknowledged is required; an
    ``info`` increment may or may not have happened, so final may exceed it by at most
    that many.
    """
    acknowledged: dict[str, int] = {}
    unknown: dict[str, int] = {}
    for op in history:
        if op.f != "increment" or op.key is None:
            continue
        if op.type == "ok":
            acknowledged[op.key] = acknowledged.get(op.key, 0) + 1
        elif op.type == "info":
            unknown[op.key] = unknown.get(op.key, 0) + 1
    anomalies = {}
    for key in set(acknowledged) | set(final):
        low, high = acknowledged.get(key, 0), acknowledged.get(key, 0) + unknown.get(key, 0)
        if not low <= final.get(key, 0) <= high:
            anomalies[key] = {"final": final.get(key, 0), "acknowledged": low, "unknown": unknown.get(key, 0)}
    return {"valid": not anomalies, "lost_updates": anomalies, "acknowledged": sum(acknowledged.values())}


def check_dirty_reads(history: Iterable[Op]) -> dict[str, Any]:
    """Dirty reads: a read must never return a value written only by a transaction that did not commit."""
    ops = list(history)
    aborted = {op.value for op in ops if op.f == "write" and op.type == "fail"}
    committed = {op.value for op in ops if op.f == "write" and op.type == "ok"}
    dirty = [op for op in ops if op.f == "read" and op.type == "ok" and op.value in aborted - committed]
    return {"valid": not dirty, "dirty_reads": [dataclasses.asdict(op) for op in dirty],
            "reads": sum(1 for op in ops if op.f == "read" and op.type == "ok")}
