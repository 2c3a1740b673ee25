"""Hypothesis state machines, built inside functions and parameterised by what they test.

``store_machine(create_store)``: random writes, deletes, searches, reopenings
and (where declared) transactions against one store, compared step by step with
the in-memory reference store.

``transaction_machine(open_stores)``: random cross-store transactions over a
MemoryManager, committed, rolled back, interrupted by simulated crashes at any
protocol step and recovered, compared with a plain dict model: after every
step each store holds exactly what the committed transactions wrote.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from memsys.adapters.memory_store import InMemoryStore
from memsys.domain.model import MemoryItem, MemoryType
from memsys.ports import Capability
from memsys.testing.crash import SimulatedCrash, abandon, crash_at
from memsys.testing.samples import EPOCH

IDS = st.sampled_from([f"id-{n}" for n in range(6)] + ["with space", "quote'd", "ünï-🧠"])
TEXT = st.sampled_from(["alpha", "beta memory", "gamma vector", "δέλτα", "", "crash commit"])
METADATA = st.fixed_dictionaries({"k": st.integers(0, 3)},
                                 optional={"tag": st.sampled_from(["x", "y"]), "deep": st.just({"a": [1, None]})})


@st.composite
def items(draw: Any) -> MemoryItem:
    created = EPOCH + timedelta(seconds=draw(st.integers(0, 100)))
    return MemoryItem(id=draw(IDS), content=draw(TEXT), memory_type=draw(st.sampled_from(list(MemoryType)[:6])),
                      metadata=draw(METADATA), created_at=created, updated_at=created,
                      version=draw(st.integers(1, 3)))


QUERIES = st.one_of(st.just({}), TEXT.map(lambda t: {"content": t}),
                    st.integers(0, 3).map(lambda k: {"metadata": {"k": k}}),
                    st.sampled_from(list(MemoryType)[:6]).map(lambda t: {"memory_type": t}),
                    st.integers(0, 3).map(lambda n: {"limit": n}))


def _state(store: Any) -> dict[str, dict]:
    return {i.id: i.to_dict() for i in store.search({})}


def store_machine(create_store: Callable[[str], Any]) -> type[RuleBasedStateMachine]:
    """A machine that checks ``create_store(path)`` against the reference store."""

    class StoreMachine(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.folder = tempfile.mkdtemp(prefix="memsys-stateful-")
            self.path = f"{self.folder}/store"
            self.store = create_store(self.path)
            self.model = InMemoryStore(dimension=8)
            self.tx: str | None = None
            self.model_tx: str | None = None
            self.transactions = Capability.TRANSACTIONS in getattr(self.store, "capabilities", ())

        @rule(item=items())
        def store_item(self, item: MemoryItem) -> None:
            assert self.store.store(item) == item.id
            self.model.store(item)

        @rule(item_id=IDS)
        def delete(self, item_id: str) -> None:
            assert self.store.delete(item_id) == self.model.delete(item_id)

        @rule(item_id=IDS)
        def retrieve(self, item_id: str) -> None:
            assert self.store.retrieve(item_id) == self.model.retrieve(item_id)

        @rule(query=QUERIES)
        def search(self, query: dict) -> None:
            assert [i.id for i in self.store.search(query)] == [i.id for i in self.model.search(query)]

        @precondition(lambda self: self.tx is None)
        @rule()
        def reopen(self) -> None:
            self.store.close()
            self.store = create_store(self.path)

        @precondition(lambda self: self.transactions and self.tx is None)
        @rule()
        def begin(self) -> None:
            self.tx = self.store.begin_transaction()
            self.model_tx = self.model.begin_transaction()

        @precondition(lambda self: self.tx is not None)
        @rule(commit=st.booleans())
        def finish(self, commit: bool) -> None:
            if commit:
                self.store.commit(self.tx)
                self.model.commit(self.model_tx)
            else:
                self.store.rollback(self.tx)
                self.model.rollback(self.model_tx)
            self.tx = self.model_tx = None

        @invariant()
        def same_state(self) -> None:
            assert _state(self.store) == _state(self.model)

        def teardown(self) -> None:
            try:
                if self.tx is not None:
                    self.store.rollback(self.tx)
                self.store.close()
            finally:
                shutil.rmtree(self.folder, ignore_errors=True)

    return StoreMachine


def transaction_machine(open_stores: Callable[[str], dict[str, Any]]) -> type[RuleBasedStateMachine]:
    """A machine that checks MemoryManager transactions over ``open_stores(folder)``."""
    from memsys.application.manager import MemoryManager
    from memsys.application.transactions import STEPS

    def content(item: MemoryItem) -> tuple:
        return (item.content, item.memory_type, item.metadata, item.created_at)

    class TransactionMachine(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.folder = tempfile.mkdtemp(prefix="memsys-tx-model-")
            self.manager = self._open()
            self.names = sorted(self.manager.adapters)
            self.model: dict[str, dict[str, tuple]] = {n: {} for n in self.names}
            self.tx: Any = None
            self.pending: dict[str, dict[str, tuple | None]] = {}

        def _open(self) -> Any:
            return MemoryManager(open_stores(self.folder), transaction_log=f"{self.folder}/txlog")

        @initialize()
        def start(self) -> None:
            assert self.manager.last_recovery.ok

        @precondition(lambda self: self.tx is None)
        @rule(data=st.data())
        def begin(self, data: Any) -> None:
            stores = data.draw(st.lists(st.sampled_from(self.names), min_size=1, unique=True))
            self.tx = self.manager.with_transaction(stores)
            self.tx.begin()
            self.pending = {s: {} for s in stores}

        @precondition(lambda self: self.tx is not None)
        @rule(data=st.data(), item=items())
        def write(self, data: Any, item: MemoryItem) -> None:
            store = data.draw(st.sampled_from(self.tx.stores))
            self.manager.adapters[store].store(item)
            self.pending[store][item.id] = content(item)

        @precondition(lambda self: self.tx is not None)
        @rule(data=st.data(), item_id=IDS)
        def delete(self, data: Any, item_id: str) -> None:
            store = data.draw(st.sampled_from(self.tx.stores))
            self.manager.adapters[store].delete(item_id)
            self.pending[store][item_id] = None

        @precondition(lambda self: self.tx is not None)
        @rule(data=st.data())
        def read_own_writes(self, data: Any) -> None:
            store = data.draw(st.sampled_from(self.tx.stores))
            for item_id, expected in self._view(store).items():
                got = self.manager.adapters[store].retrieve(item_id)
                assert (got is None and expected is None) or (got is not None and content(got) == expected)

        def _view(self, store: str) -> dict[str, tuple | None]:
            return {**{k: v for k, v in self.model[store].items()}, **self.pending.get(store, {})}

        @precondition(lambda self: self.tx is not None)
        @rule(commit=st.booleans())
        def finish(self, commit: bool) -> None:
            if commit:
                self.tx.commit()
                self._apply_pending()
            else:
                self.tx.rollback()
            self.tx, self.pending = None, {}

        def _apply_pending(self) -> None:
            for store, writes in self.pending.items():
                for item_id, value in writes.items():
                    if value is None:
                        self.model[store].pop(item_id, None)
                    else:
                        self.model[store][item_id] = value

        @precondition(lambda self: self.tx is None)
        @rule(data=st.data(), item=items())
        def write_outside(self, data: Any, item: MemoryItem) -> None:
            store = data.draw(st.sampled_from(self.names))
            self.manager.adapters[store].store(item)
            self.model[store][item.id] = content(item)

        @precondition(lambda self: self.tx is not None and any(self.pending.values()))
        @rule(step=st.sampled_from(STEPS))
        def crash_during_commit(self, step: str) -> None:
            crash_at(self.manager, step)
            try:
                self.tx.commit()
            except SimulatedCrash:
                pass
            abandon(self.manager)
            if STEPS.index(step) >= STEPS.index("after_log_sync"):
                self._apply_pending()  # decided: recovery must finish it
            self.tx, self.pending = None, {}
            self.manager = self._open()
            assert self.manager.last_recovery.ok

        @invariant()
        def stores_hold_what_was_committed(self) -> None:
            if self.tx is not None:
                return  # reads would see the open transaction's own writes
            for name in self.names:
                got = {i.id: content(i) for i in self.manager.adapters[name].search({})}
                assert got == self.model[name], f"store {name} diverged from the committed history"

        def teardown(self) -> None:
            try:
                if self.tx is not None and self.tx.state == "active":
                    self.tx.rollback()
                self.manager.close()
            finally:
                shutil.rmtree(self.folder, ignore_errors=True)

    return TransactionMachine
