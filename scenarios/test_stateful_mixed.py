"""The full manager machine (scenarios/machines.py) over mixed sets of real stores.

Every mix holds at least one store without native transactions (TinyDB, NetworkX, FAISS,
Chroma), so the coordinator log is all that makes its writes atomic with the others. Stores
are named by backend and ordered by name: the first is the primary of degraded writes, the
last the fallback, any between are secondaries.
"""

from __future__ import annotations

import pytest

from scenarios import profiles
from scenarios.machines import backend_stores, manager_machine

MIXES = {
    ("lmdb", "tinydb"): (10, 25),
    ("duckdb", "faiss", "networkx"): (8, 25),
    ("chroma", "kuzu", "lmdb"): (4, 20),
    ("duckdb", "kuzu", "lmdb", "networkx", "tinydb"): (5, 25),
}


@pytest.mark.parametrize("backends", list(MIXES), ids=["+".join(m) for m in MIXES])
def test_manager_over_mixed_stores_matches_the_model(backends: tuple[str, ...]) -> None:
    assert set(backends) & {"tinydb", "networkx", "faiss", "chroma"}, "a mix needs a store without transactions"
    examples, steps = MIXES[backends]
    profiles.run(manager_machine(backend_stores(*backends), label="+".join(backends)),
                 examples=examples, steps=steps)
