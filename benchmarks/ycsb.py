"""YCSB core workloads A-F over any memsys store, without locust (so tests can import it).

    A  50 % read, 50 % update                zipfian
    B  95 % read,  5 % update                zipfian
    C 100 % read                             zipfian
    D  95 % read,  5 % insert                latest
    E  95 % scan,  5 % insert                zipfian start, length uniform in 1..100
    F  50 % read, 50 % read-modify-write     zipfian

Records are YCSB's: ten fields of 100 bytes. As a MemoryItem, field0 is the content and
field1-field9 the metadata; the record's ordinal is its ``created_at`` (microseconds after an
epoch), so a YCSB scan ("records from key K in key order, at most N") is the memsys query
``{"created_after": created_at(K), "limit": N}``, which stores push down where they can.
Key choice follows YCSB: the zipfian generator of Gray et al. (constant 0.99) over the
records, scrambled by an FNV hash so the popular keys are spread over the key space; "latest"
favours the most recently inserted records. Everything is seeded: one seed, one sequence.

``LogHistogram`` keeps latencies in microseconds in 1 % buckets (locust rounds to whole
milliseconds, useless for sub-millisecond stores); histograms merge, so workers' figures add up
on a locust master.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import random
import string
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta, timezone
from typing import Any

EPOCH = datetime(2025, 1, 1, tzinfo=timezone.utc)
FIELDS = 10
FIELD_BYTES = 100
MAX_SCAN = 100
ZIPFIAN_CONSTANT = 0.99


@dataclasses.dataclass(frozen=True)
class Workload:
    name: str
    mix: tuple[tuple[str, float], ...]  # (operation, proportion)
    distribution: str  # "zipfian" or "latest"

    def choose(self, rng: random.Random) -> str:
        x = rng.random()
        for op, share in self.mix:
            if x < share:
                return op
            x -= share
        return self.mix[-1][0]


WORKLOADS = {
    "A": Workload("A", (("read", 0.5), ("update", 0.5)), "zipfian"),
    "B": Workload("B", (("read", 0.95), ("update", 0.05)), "zipfian"),
    "C": Workload("C", (("read", 1.0),), "zipfian"),
    "D": Workload("D", (("read", 0.95), ("insert", 0.05)), "latest"),
    "E": Workload("E", (("scan", 0.95), ("insert", 0.05)), "zipfian"),
    "F": Workload("F", (("read", 0.5), ("read_modify_write", 0.5)), "zipfian"),
}


def key(ordinal: int) -> str:
    return f"user{ordinal:012d}"


def created_at(ordinal: int) -> datetime:
    return EPOCH + timedelta(microseconds=ordinal)


def _field(rng: random.Random) -> str:
    return "".join(rng.choices(string.ascii_letters + string.digits, k=FIELD_BYTES))


def record(ordinal: int, version: int = 0) -> Any:
    """Record ``ordinal`` (``version`` changes its fields, as an update does)."""
    from memsys.domain.model import MemoryItem, MemoryType

    rng = random.Random(ordinal * 1_000_003 + version)
    fields = [_field(rng) for _ in range(FIELDS)]
    stamp = created_at(ordinal)
    return MemoryItem(id=key(ordinal), content=fields[0], memory_type=MemoryType.KNOWLEDGE,
                      metadata={f"field{i}": fields[i] for i in range(1, FIELDS)}, created_at=stamp,
                      updated_at=stamp + timedelta(seconds=version))


def updated(item: Any, rng: random.Random) -> Any:
    """``item`` with one field rewritten (YCSB's default update writes one field)."""
    from memsys.domain.model import MemoryItem

    field = rng.randrange(FIELDS)
    metadata = dict(item.metadata)
    content = item.content
    if field == 0:
        content = _field(rng)
    else:
        metadata[f"field{field}"] = _field(rng)
    return MemoryItem(id=item.id, content=content, memory_type=item.memory_type, metadata=metadata,
                      created_at=item.created_at)


def fnv1a64(value: int) -> int:
    h = 0xCBF29CE484222325
    for _ in range(8):
        h ^= value & 0xFF
        h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
        value >>= 8
    return h


class Zipfian:
    """YCSB's ZipfianGenerator over [0, n): rank 0 most popular. ``grow`` extends n cheaply."""

    def __init__(self, n: int, theta: float = ZIPFIAN_CONSTANT) -> None:
        if n < 1:
            raise ValueError("a zipfian needs at least one item")
        self.theta = theta
        self.zeta2 = 1 + 0.5 ** theta
        self.alpha = 1 / (1 - theta)
        self.n = 0
        self.zetan = 0.0
        self.grow(n)

    def grow(self, n: int) -> None:
        if n <= self.n:
            return
        self.zetan += sum(1 / (i ** self.theta) for i in range(self.n + 1, n + 1))
        self.n = n
        self.eta = (1 - (2 / n) ** (1 - self.theta)) / (1 - self.zeta2 / self.zetan)

    def next(self, rng: random.Random) -> int:
        u = rng.random()
        uz = u * self.zetan
        if uz < 1:
            return 0
        if uz < self.zeta2:
            return 1
        return min(self.n - 1, int(self.n * (self.eta * u - self.eta + 1) ** self.alpha))


class KeyChooser:
    """Which record an operation touches: scrambled zipfian, or latest (zipfian by recency)."""

    def __init__(self, distribution: str, records: int, seed: int) -> None:
        if distribution not in ("zipfian", "latest", "uniform"):
            raise ValueError(f"unknown key distribution {distribution!r}")
        self.distribution = distribution
        self.rng = random.Random(seed)
        self.records = records
        self.zipf = Zipfian(records)
        self.inserted: list[int] = []  # ordinals this chooser inserted, oldest first

    def known(self) -> int:
        return self.records + len(self.inserted)

    def existing(self) -> int:
        if self.distribution == "uniform":
            return self._ordinal(self.rng.randrange(self.known()))
        if self.distribution == "latest":
            self.zipf.grow(self.known())
            return self._ordinal(self.known() - 1 - self.zipf.next(self.rng))
        return fnv1a64(self.zipf.next(self.rng)) % self.records  # scrambled over the preloaded records

    def _ordinal(self, position: int) -> int:
        return position if position < self.records else self.inserted[position - self.records]

    def note_insert(self, ordinal: int) -> None:
        self.inserted.append(ordinal)

    def scan_length(self) -> int:
        return self.rng.randint(1, MAX_SCAN)


class LogHistogram:
    """Latencies in microseconds, 1 % buckets; mergeable and JSON-friendly (``to_dict``)."""

    GROWTH = math.log(1.01)

    def __init__(self, counts: Mapping[int, int] | None = None) -> None:
        self.counts: dict[int, int] = dict(counts or {})

    def add(self, micros: float) -> None:
        bucket = int(math.log(max(micros, 1.0)) / self.GROWTH)
        self.counts[bucket] = self.counts.get(bucket, 0) + 1

    def merge(self, other: LogHistogram | Mapping[str, int]) -> None:
        counts = other.counts if isinstance(other, LogHistogram) else {int(k): v for k, v in other.items()}
        for bucket, count in counts.items():
            self.counts[bucket] = self.counts.get(bucket, 0) + count

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def percentile(self, p: float) -> float:
        """The ``p``-th percentile (0-100) in microseconds (bucket midpoint), NaN when empty."""
        total = self.total
        if not total:
            return math.nan
        rank = max(1, math.ceil(total * p / 100))
        seen = 0
        for bucket in sorted(self.counts):
            seen += self.counts[bucket]
            if seen >= rank:
                return math.exp((bucket + 0.5) * self.GROWTH)
        return math.exp((max(self.counts) + 0.5) * self.GROWTH)

    def to_dict(self) -> dict[str, int]:
        return {str(k): v for k, v in self.counts.items()}


def parse_spec(spec: str) -> tuple[str, str, dict[str, Any]]:
    """``backend:PATH[?key=value&...]`` -> (backend, path, options); ``chroma+http://HOST:PORT?...``
    names a Chroma server. Values become bool / int / float where they read as one."""
    spec = spec.strip()
    if spec.startswith("chroma+http://") or spec.startswith("chroma+https://"):
        target, _, query = spec.partition("?")
        options = _options(query)
        options["server"] = target[len("chroma+"):]
        return "chroma", "", options
    backend, sep, rest = spec.partition(":")
    if not sep or not backend or not rest:
        raise ValueError(f"store spec {spec!r}: want BACKEND:PATH, e.g. lmdb:/tmp/ycsb (backends: lmdb, duckdb, "
                         "kuzu, tinydb, networkx, faiss, chroma)")
    path, _, query = rest.partition("?")
    return backend, path, _options(query)


def _options(query: str) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for part in filter(None, query.split("&")):
        name, _, raw = part.partition("=")
        value: Any = raw
        if raw.lower() in ("true", "false"):
            value = raw.lower() == "true"
        else:
            for cast in (int, float):
                try:
                    value = cast(raw)
                    break
                except ValueError:
                    continue
        options[name] = value
    return options


def open_spec(spec: str) -> Any:
    from memsys.adapters import adapter_class

    backend, path, options = parse_spec(spec)
    cls = adapter_class(backend)
    return cls(path=path, **options) if path else cls(**options)


def preload(store: Any, records: int, batch: int = 1_000) -> int:
    """Store records 0..records-1 that are not there yet; returns how many it wrote."""
    written = 0
    for start in range(0, records, batch):
        ordinals = range(start, min(records, start + batch))
        present = store.retrieve_many([key(i) for i in ordinals])
        missing = [record(i) for i in ordinals if key(i) not in present]
        if missing:
            store.store_many(missing)
            written += len(missing)
    return written


class NotFound(Exception):
    """A YCSB read of a record that should exist."""


class Client:
    """One YCSB client over ``store``: ``next()`` draws the workload's next operation and returns
    ``(name, thunk)``; calling the thunk does it. The locust user and ``benchmarks.figures`` both
    drive this, so the operations are the same wherever the figures come from. ``insert_from`` is
    the first ordinal this client inserts (clients of one run must not collide)."""

    def __init__(self, store: Any, workload: str, records: int, seed: int, insert_from: int) -> None:
        self.store = store
        self.workload = WORKLOADS[workload]
        self.rng = random.Random(seed)
        self.keys = KeyChooser(self.workload.distribution, records, seed=self.rng.randrange(2**32))
        self.next_insert = itertools.count(insert_from)

    def next(self) -> tuple[str, Callable[[], Any]]:
        op = self.workload.choose(self.rng)
        return op, getattr(self, op)()

    def _read(self, ordinal: int) -> Any:
        found = self.store.retrieve(key(ordinal))
        if found is None:
            raise NotFound(f"record {key(ordinal)} is missing")
        return found

    def read(self) -> Callable[[], Any]:
        ordinal = self.keys.existing()
        return lambda: self._read(ordinal)

    def update(self) -> Callable[[], Any]:
        fresh = updated(record(self.keys.existing()), self.rng)
        return lambda: self.store.store(fresh)

    def insert(self) -> Callable[[], Any]:
        ordinal = next(self.next_insert)
        item = record(ordinal)

        def insert() -> Any:
            done = self.store.store(item)
            self.keys.note_insert(ordinal)  # only once it is stored: reads must find what they pick
            return done
        return insert

    def scan(self) -> Callable[[], Any]:
        start, length = self.keys.existing(), self.keys.scan_length()
        query = {"created_after": created_at(start), "limit": length}
        return lambda: self.store.search(query)

    def read_modify_write(self) -> Callable[[], Any]:
        ordinal = self.keys.existing()

        def rmw() -> Any:
            return self.store.store(updated(self._read(ordinal), self.rng))
        return rmw


PORT_FAULT_KINDS = ("transient", "permanent", "latency")


def parse_port_faults(text: str) -> list[dict[str, Any]]:
    """``retrieve=latency:0.2:0.005,store=transient:0.05`` -> rules for memsys.testing.port_faults:
    METHOD=KIND[:PROBABILITY[:SECONDS]] (METHOD may be ``*``; SECONDS is a latency fault's sleep)."""
    rules = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        method, sep, rest = part.partition("=")
        kind, _, tail = rest.partition(":")
        probability, _, seconds = tail.partition(":")
        try:
            rule = {"method": method.strip(), "kind": kind.strip(),
                    "probability": float(probability) if probability else 1.0,
                    "seconds": float(seconds) if seconds else 0.0}
        except ValueError:
            rule = {}
        if not sep or not rule or not rule["method"] or rule["kind"] not in PORT_FAULT_KINDS \
                or not 0 < rule["probability"] <= 1 or (rule["kind"] == "latency") != (rule["seconds"] > 0):
            raise ValueError(f"port fault {part!r}: want METHOD=KIND[:PROBABILITY[:SECONDS]] with KIND one of "
                             f"{', '.join(PORT_FAULT_KINDS)}, 0 < PROBABILITY <= 1, and SECONDS > 0 for latency "
                             "only, e.g. retrieve=latency:0.2:0.005,store=transient:0.05")
        rules.append(rule)
    return rules


def port_fault_plan(text: str, seed: int) -> Any:
    """A seeded memsys.testing.port_faults.FaultPlan holding the rules ``text`` names."""
    from memsys.testing.port_faults import FaultPlan

    plan = FaultPlan(seed=seed)
    for rule in parse_port_faults(text):
        plan.add(method=rule["method"], kind=rule["kind"], probability=rule["probability"], seconds=rule["seconds"])
    return plan
