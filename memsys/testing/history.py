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
