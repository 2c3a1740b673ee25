"""Digests for anti-entropy: find where two stores differ without comparing every item.

Every id is hashed onto the 64-bit ring, and the ring is cut into ``buckets`` equal ranges.
A store's ``DigestIndex`` keeps, per range, the (version, content hash) of each id in it and a
digest of the range: the XOR of one 128-bit hash per entry over (id, version, content). XOR
makes the digest independent of the order items are read in and lets one write update it in
O(1) (XOR the old entry out, the new one in), so an index kept current from commits costs a
hash per write and nothing per comparison.

Comparing two indexes compares ``buckets`` digests; only the ranges whose digests differ are
compared id by id, and only their ids need to be read from the stores to confirm and repair.
Two indexes can be compared only if they cut the ring the same way (same ``buckets``).

An index is built by one scan of a store (``DigestIndex.scan``) and kept current with
``apply(ops)`` from the commits that reach the store (``SyncManager`` does this through the
coordinator's commit listeners); ``put`` / ``discard`` correct single entries after a read.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import threading
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from memsys.domain.errors import InvalidInputError
from memsys.domain.model import MemoryItem
from memsys.domain.operations import Delete, Put

DEFAULT_BUCKETS = 1024
MAX_BUCKETS = 1 << 20

# (version, content hash, entry hash): what an index keeps per id.
Entry = tuple[int, bytes, int]


def check_buckets(buckets: Any) -> int:
    if isinstance(buckets, bool) or not isinstance(buckets, int) or not 1 <= buckets <= MAX_BUCKETS:
        raise InvalidInputError(f"buckets must be an int from 1 to {MAX_BUCKETS}, got {buckets!r}")
    return buckets


def canonical(item: MemoryItem) -> bytes:
    """The bytes two stores must agree on for one item: every field, keys sorted. Built from the
    item's own (frozen) values, not ``to_dict()``, whose deep copy would double the cost a
    write pays to keep an index current."""
    return json.dumps([item.id, item.content, item.memory_type.value, item.metadata, item.created_at.isoformat(),
                       item.updated_at.isoformat(), item.version],
                      sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()


def content_hash(item: MemoryItem) -> bytes:
    return hashlib.blake2b(canonical(item), digest_size=16).digest()


def _id_key(item_id: str) -> bytes:
    return item_id.encode("utf-8", "surrogatepass")


def bucket_of(item_id: str, buckets: int) -> int:
    """The range of the ring ``item_id`` hashes into: contiguous ranges of a 64-bit hash."""
    ring = int.from_bytes(hashlib.blake2b(_id_key(item_id), digest_size=8).digest(), "big")
    return (ring * buckets) >> 64


def entry_of(item: MemoryItem) -> Entry:
    chash = content_hash(item)
    mixed = hashlib.blake2b(_id_key(item.id) + b"\0" + str(item.version).encode() + b"\0" + chash,
                            digest_size=16).digest()
    return item.version, chash, int.from_bytes(mixed, "big")


class DigestIndex:
    """Per hash range of ids: each id's (version, content hash), and the range's digest."""

    def __init__(self, buckets: int = DEFAULT_BUCKETS) -> None:
        self.buckets = check_buckets(buckets)
        self._digests = [0] * buckets
        self._entries: list[dict[str, Entry]] = [{} for _ in range(buckets)]
        self._lock = threading.Lock()
        self._count = 0

    @classmethod
    def scan(cls, store: Any, buckets: int = DEFAULT_BUCKETS) -> DigestIndex:
        """Build an index by reading every item of ``store`` once (``iter_items``, else ``search({})``);
        items are dropped as they are read, only their entries are kept."""
        index = cls(buckets)
        scan = getattr(store, "iter_items", None)
        index.put_many(scan() if callable(scan) else store.search({}))
        return index

    def __len__(self) -> int:
        return self._count

    # --- keeping it current

    def put(self, item: MemoryItem) -> None:
        self.put_many((item,))

    def put_many(self, items: Iterable[MemoryItem]) -> None:
        for item in items:
            entry = entry_of(item)
            bucket = bucket_of(item.id, self.buckets)
            with self._lock:
                old = self._entries[bucket].get(item.id)
                if old is not None:
                    self._digests[bucket] ^= old[2]
                else:
                    self._count += 1
                self._entries[bucket][item.id] = entry
                self._digests[bucket] ^= entry[2]

    def discard(self, item_id: str) -> None:
        bucket = bucket_of(item_id, self.buckets)
        with self._lock:
            old = self._entries[bucket].pop(item_id, None)
            if old is not None:
                self._digests[bucket] ^= old[2]
                self._count -= 1

    def apply(self, ops: Sequence[Any]) -> None:
        """Follow committed operations (Put / Delete; relationships do not change items)."""
        for op in ops:
            if isinstance(op, Put):
                self.put(op.item)
            elif isinstance(op, Delete):
                self.discard(op.item_id)

    # --- reading it

    def digest(self, bucket: int) -> int:
        return self._digests[bucket]

    def digests(self) -> list[int]:
        with self._lock:
            return list(self._digests)

    def root(self) -> str:
        """One hex digest of the whole index: equal roots, equal stores (as far as 128-bit hashes tell)."""
        data = b"".join(d.to_bytes(16, "big") for d in self.digests())
        return hashlib.blake2b(data, digest_size=16).hexdigest()

    def entries(self, bucket: int) -> dict[str, Entry]:
        with self._lock:
            return dict(self._entries[bucket])

    def get(self, item_id: str) -> Entry | None:
        return self._entries[bucket_of(item_id, self.buckets)].get(item_id)

    def ids(self) -> Iterator[str]:
        for bucket in range(self.buckets):
            yield from list(self._entries[bucket])

    def differing_buckets(self, other: DigestIndex) -> list[int]:
        if other.buckets != self.buckets:
            raise InvalidInputError(f"digest indexes cut the id ring differently ({self.buckets} and "
                                    f"{other.buckets} buckets); build both with the same number")
        ours, theirs = self.digests(), other.digests()
        return [b for b in range(self.buckets) if ours[b] != theirs[b]]


@dataclasses.dataclass
class DigestDiff:
    """How two indexes differ. ``versions`` maps each differing id to (version in A, in B), None
    where a side lacks it; ``compared_entries`` counts the entries compared one by one (those of
    the differing ranges), the rest were settled by their range's digest."""

    only_a: list[str] = dataclasses.field(default_factory=list)
    only_b: list[str] = dataclasses.field(default_factory=list)
    newer_a: list[str] = dataclasses.field(default_factory=list)
    newer_b: list[str] = dataclasses.field(default_factory=list)
    conflicting: list[str] = dataclasses.field(default_factory=list)  # same version, different content
    versions: dict[str, tuple[int | None, int | None]] = dataclasses.field(default_factory=dict)
    buckets: int = 0
    differing_buckets: int = 0
    compared_entries: int = 0

    @property
    def ids(self) -> list[str]:
        return list(self.versions)

    @property
    def equal(self) -> bool:
        return not self.versions


def compare(a: DigestIndex, b: DigestIndex) -> DigestDiff:
    """Compare two indexes range by range; only differing ranges are compared id by id."""
    differing = a.differing_buckets(b)
    report = DigestDiff(buckets=a.buckets, differing_buckets=len(differing))
    for bucket in differing:
        ours, theirs = a.entries(bucket), b.entries(bucket)
        report.compared_entries += len(ours) + len(theirs)
        for item_id in ours.keys() | theirs.keys():
            x, y = ours.get(item_id), theirs.get(item_id)
            if x is not None and y is not None and x[2] == y[2]:
                continue
            report.versions[item_id] = (x and x[0], y and y[0])
            if y is None:
                report.only_a.append(item_id)
            elif x is None:
                report.only_b.append(item_id)
            elif x[0] > y[0]:
                report.newer_a.append(item_id)
            elif x[0] < y[0]:
                report.newer_b.append(item_id)
            else:
                report.conflicting.append(item_id)
    for ids in (report.only_a, report.only_b, report.newer_a, report.newer_b, report.conflicting):
        ids.sort()
    report.versions = dict(sorted(report.versions.items()))
    return report


__all__ = ["DEFAULT_BUCKETS", "DigestDiff", "DigestIndex", "bucket_of", "canonical", "compare", "content_hash",
           "entry_of"]
