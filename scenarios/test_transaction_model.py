"""The stateful model of cross-store transactions, bound to real embedded stores.

Random transactions over LMDB, DuckDB (native transactions), TinyDB and
NetworkX (none): committed, rolled back, or stopped by a simulated crash at any
protocol step and recovered on reopen. After every step each store must hold
exactly what the committed transactions wrote. scenarios/test_stateful_*.py extend this machine
with the rest of the failure catalogue (scenarios/machines.py).
"""

from __future__ import annotations

from memsys.adapters.duckdb_store import DuckDBMemoryAdapter
from memsys.adapters.lmdb_store import LMDBMemoryAdapter
from memsys.adapters.networkx_store import GraphMemoryAdapter
from memsys.adapters.tinydb_store import TinyDBMemoryAdapter
from memsys.testing.stateful import transaction_machine
from scenarios import profiles


def open_stores(folder: str) -> dict:
    return {"lmdb": LMDBMemoryAdapter(path=f"{folder}/lmdb", sync=False),
            "duckdb": DuckDBMemoryAdapter(path=f"{folder}/items.duckdb", sync=False),
            "tinydb": TinyDBMemoryAdapter(path=f"{folder}/items.json", sync=False),
            "networkx": GraphMemoryAdapter(path=f"{folder}/graph", sync=False)}


def test_cross_store_transactions_match_the_model() -> None:
    profiles.run(transaction_machine(open_stores), examples=25, steps=30)  # MEMSYS_PROFILE=deep: 10x
