"""The operation log: every committed transaction's writes, for audit and replay.

The coordinator log is compacted once the stores hold its writes; this log is
not. One JSON line per committed transaction, in commit order:
``{"lsn", "txid", "ops": {store: [operation, ...]}}``. ``replay`` applies a
log to a set of stores (to rebuild a store from scratch, or a copy elsewhere):
operations are idempotent, so replaying over a store that already holds some
of them converges to the same state.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from memsys.domain.errors import CorruptStoreError, InvalidInputError
from memsys.domain.operations import decode_op, encode_op


class OperationLog:
    def __init__(self, path: str | os.PathLike[str], *, sync: bool = False) -> None:
        self.path = os.fspath(path)
        self.sync = sync
        self._lock = threading.Lock()

    def append(self, committed: Sequence[Any]) -> None:
        """Append committed transactions (objects with transaction_id, lsn and ops)."""
        lines = "".join(json.dumps({"lsn": c.lsn, "txid": c.transaction_id,
                                    "ops": {n: [encode_op(op) for op in ops] for n, ops in c.ops.items()}},
                                   ensure_ascii=False) + "\n" for c in committed)
        with self._lock, open(self.path, "a", encoding="utf-8") as f:
            f.write(lines)
            f.flush()
            if self.sync:
                os.fsync(f.fileno())


def read_operations(path: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """The records of an operation log, in order. A torn last line (a crash mid-write) is skipped."""
    with open(path, encoding="utf-8") as f:
        lines = f.readlines()
    for number, line in enumerate(lines, 1):
        try:
            yield json.loads(line)
        except ValueError as exc:
            if number == len(lines) and not line.endswith("\n"):
                return
            raise CorruptStoreError(f"{path}: line {number} is not a JSON record", path=os.fspath(path)) from exc


def replay(path: str | os.PathLike[str], stores: Mapping[str, Any], *, since_lsn: int = 0,
           until_lsn: int | None = None, only: Sequence[str] | None = None) -> int:
    """Apply the logged writes with since_lsn < lsn <= until_lsn to ``stores``; returns transactions replayed."""
    wanted = set(only) if only is not None else set(stores)
    missing = wanted - set(stores)
    if missing:
        raise InvalidInputError(f"replay targets unknown stores {sorted(missing)}")
    count = 0
    for record in read_operations(path):
        if record["lsn"] <= since_lsn or (until_lsn is not None and record["lsn"] > until_lsn):
            continue
        for name, ops in record["ops"].items():
            if name in wanted:
                store = stores[name]
                store.apply_prepared(store.prepare_ops([decode_op(op) for op in ops]))
        count += 1
    return count
