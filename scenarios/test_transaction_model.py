"""The stateful model of cross-store transactions, bound to real embedded stores.

Random transactions over LMDB, DuckDB (native transactions), TinyDB and
NetworkX (none): committed, rolled back, or stopped by a simulated crash at any
protocol step and recovered on reopen. After every step each store must hold
exactly what the committed transactions wrote.
"""

from __future__ import annotations

from hypothesis import HealthCheck, settings
from hypothesis.stateful import run_state_machine_as_test

from memsys.adapters.duckdb_store import DuckDBMemoryAdapter
from memsys.adapters.lmdb_store import LMDBMemoryAdapter
from memsys.adapters.networkx_store import GraphMemoryAdapter
from memsys.adapters.tinydb_store import TinyDBMemoryAdapter
from memsys.testing.stateful import transaction_machine


def open_stores(folder: str) -> dict:
    return {"lmdb": LMDBMemoryAdapter(path=f"{folder}/lmdb", sync=False),
            "duckdb": DuckDBMemoryAdapter(path=f"{folder}/items.duckdb", sync=False),
            "tinydb": TinyDBMemoryAdapter(path=f"{folder}/items.json", sync=False),
            "networkx": GraphMemoryAdapter(path=f"{folder}/graph", sync=False)}


def test_cross_store_transactions_match_the_model() -> None:
    run_state_machine_as_test(transaction_machine(open_stores), settings=settings(
        max_examples=25, stateful_step_count=30, deadline=None, suppress_health_check=list(HealthCheck)))
