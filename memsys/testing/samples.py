"""Deterministic sample items for contracts, models and chaos runs.

Everything here is a pure function of its arguments, so a failure reproduces.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

from memsys.domain.model import MemoryItem, MemoryType

_DEFAULT_CONTENT = object()

EPOCH = datetime(2025, 1, 1, tzinfo=timezone.utc)

#: Text that trips naive encoders: emoji, CJK, RTL, combining marks, quotes, NUL-free control-ish.
UNICODE_TEXT = "naïve café — 日本語テキスト — עברית — emoji 🧠💾 — e\u0301 — 'quotes' \"double\" \\ back\\slash\n\ttabs"

#: Ids that break string-built SQL, Cypher, file names or JSON keys.
AWKWARD_IDS = [
    "plain-id",
    "with space",
    "quote'single",
    'quote"double',
    "'); DROP TABLE items; --",
    "MATCH (n) DETACH DELETE n",
    "slash/and\\backslash",
    "ünïcødé-🧠",
    "dot.in.id",
    "x" * 200,
]


def sample_item(i: int, *, prefix: str = "item", memory_type: MemoryType | None = None,
                content: object = _DEFAULT_CONTENT, version: int = 1) -> MemoryItem:
    """Item number ``i``: unicode content, nested metadata, fixed timestamps."""
    types = list(MemoryType)
    created = EPOCH + timedelta(seconds=i, microseconds=i % 997)
    return MemoryItem(
        id=f"{prefix}-{i:05d}",
        content=f"{UNICODE_TEXT} #{i}" if content is _DEFAULT_CONTENT else content,
        memory_type=memory_type or types[i % len(types)],
        metadata={
            "n": i,
            "parity": "even" if i % 2 == 0 else "odd",
            "score": i / 7,
            "flag": i % 3 == 0,
            "nothing": None,
            "tags": [f"t{i % 5}", "shared", {"deep": [i, {"deeper": str(i)}]}],
            "nested": {"a": {"b": {"c": i}}, "empty": {}, "list": []},
            "big": 2**62 + i,
        },
        created_at=created,
        updated_at=created + timedelta(minutes=1),
        version=version,
    )


def random_item(rng: random.Random, item_id: str, *, version: int = 1) -> MemoryItem:
    """A random but reproducible item (the caller owns the seeded ``rng``)."""
    words = ["alpha", "beta", "gamma", "delta", "memory", "graph", "vector", "store", "crash", "commit"]
    content = " ".join(rng.choice(words) for _ in range(rng.randint(1, 12)))
    created = EPOCH + timedelta(seconds=rng.randint(0, 10**6), microseconds=rng.randint(0, 999_999))
    return MemoryItem(
        id=item_id,
        content=content,
        memory_type=rng.choice(list(MemoryType)),
        metadata={"k": rng.randint(0, 4), "w": rng.choice(words), "v": version},
        created_at=created,
        updated_at=created,
        version=version,
    )
