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
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

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


def _agree(step: str, adapter: Any, model: Any, note: str = "") -> None:
    if adapter != model:
        raise Disagreement(step, adapter, model, note)


def _agree_states(adapter: dict[str, dict], model: dict[str, dict]) -> None:
    if adapter != model:
        differing = sorted(set(adapter) ^ set(model) | {k for k in adapter.keys() & model.keys()
                                                         if adapter[k] != model[k]})
        raise Disagreement("the state after this step (search({}))", {k: adapter.get(k) for k in differing},
                           {k: model.get(k) for k in differing}, f"differing ids {differing}")


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
            _agree(f"store({item.id!r})", self.store.store(item), item.id)
            self.model.store(item)

        @rule(item_id=IDS)
        def delete(self, item_id: str) -> None:
            _agree(f"delete({item_id!r})", self.store.delete(item_id), self.model.delete(item_id))

        @rule(item_id=IDS)
        def retrieve(self, item_id: str) -> None:
            _agree(f"retrieve({item_id!r})", self.store.retrieve(item_id), self.model.retrieve(item_id))

        @rule(query=QUERIES)
        def search(self, query: dict) -> None:
            _agree(f"search({query!r})", [i.id for i in self.store.search(query)],
                   [i.id for i in self.model.search(query)], "ids in order")

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
            _agree_states(_state(self.store), _state(self.model))

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


# ----------------------------------------------------------------------------------------------------
# run_stateful_conformance: any adapter factory against the reference store, with readable failures


class Disagreement(AssertionError):
    """The adapter and the in-memory reference answered one step differently."""

    def __init__(self, step: str, adapter: Any, model: Any, note: str = "") -> None:
        self.step, self.adapter, self.model, self.note = step, adapter, model, note
        super().__init__(f"the adapter and the reference disagree at {step}{': ' + note if note else ''}\n"
                         f"  adapter:   {_shown(adapter)}\n  reference: {_shown(model)}")


class StatefulConformanceError(AssertionError):
    """A stateful conformance failure: the shortest failing sequence, the disagreeing step, both values,
    and how to reproduce it (``seed``, or ``blob`` for ``run_stateful_conformance(..., blob=...)``)."""

    def __init__(self, message: str, *, steps: list[str], step: str, adapter: Any, model: Any, seed: int | None,
                 blob: str | None, cause: BaseException) -> None:
        super().__init__(message)
        self.steps, self.step, self.adapter, self.model = steps, step, adapter, model
        self.seed, self.blob, self.cause = seed, blob, cause


def _shown(value: Any, limit: int = 600) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} characters)"


def _plain_items(items: Any) -> Any:
    if items is None:
        return None
    if isinstance(items, MemoryItem):
        return items.to_dict()
    if isinstance(items, dict):
        return {k: _plain_items(v) for k, v in items.items()}
    return [_plain_items(i) for i in items]


_STRING_QUERIES = st.sampled_from(["alpha", "memory", "Δέλτα", "commit", ""])


def conformance_machine(factory: Callable[[str], Any]) -> type[RuleBasedStateMachine]:
    """The machine ``run_stateful_conformance`` runs: ``factory(path)`` against InMemoryStore through
    store, update, delete, retrieve, search (dict and string queries), reopen (PERSISTENCE), batches
    (where the store has them), transactions (TRANSACTIONS) and vectors (VECTOR_SEARCH)."""

    class AdapterConformance(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.folder = tempfile.mkdtemp(prefix="memsys-conformance-")
            self.path = f"{self.folder}/store"
            self.store = factory(self.path)
            self.model = InMemoryStore(dimension=8)
            capabilities = frozenset(getattr(self.store, "capabilities", ()))
            self.persistent = Capability.PERSISTENCE in capabilities
            self.transactions = Capability.TRANSACTIONS in capabilities
            self.vectors = Capability.VECTOR_SEARCH in capabilities
            self.batches = all(callable(getattr(self.store, m, None))
                               for m in ("store_many", "retrieve_many", "delete_many"))
            self.tx: str | None = None
            self.model_tx: str | None = None

        def _agree(self, step: str, adapter: Any, model: Any, note: str = "") -> None:
            _agree(step, adapter, model, note)

        @rule(item=items())
        def store_item(self, item: MemoryItem) -> None:
            self._agree(f"store({item.id!r})", self.store.store(item), self.model.store(item))

        @precondition(lambda self: bool(self.model.count()))
        @rule(data=st.data(), content=TEXT)
        def update(self, data: Any, content: str) -> None:
            current = data.draw(st.sampled_from(sorted(i.id for i in self.model.search({}))), label="id")
            old = self.model.retrieve(current)
            item = old.replace(content=content, metadata={**old.metadata, "k": (old.metadata.get("k", 0) + 1) % 4},
                               updated_at=old.updated_at + timedelta(seconds=1), version=old.version + 1)
            self.store.store(item)
            self.model.store(item)
            self._agree(f"retrieve({current!r}) after updating it", _plain_items(self.store.retrieve(current)),
                        _plain_items(item))

        @rule(item_id=IDS)
        def delete(self, item_id: str) -> None:
            self._agree(f"delete({item_id!r})", self.store.delete(item_id), self.model.delete(item_id))

        @rule(item_id=IDS)
        def retrieve(self, item_id: str) -> None:
            self._agree(f"retrieve({item_id!r})", _plain_items(self.store.retrieve(item_id)),
                        _plain_items(self.model.retrieve(item_id)))

        @rule(query=st.one_of(QUERIES, _STRING_QUERIES))
        def search(self, query: Any) -> None:
            self._agree(f"search({query!r})", [i.id for i in self.store.search(query)],
                        [i.id for i in self.model.search(query)], "ids in order")

        @precondition(lambda self: self.batches and self.tx is None)
        @rule(batch=st.lists(items(), max_size=4), doomed=st.lists(IDS, max_size=3))
        def batch(self, batch: list[MemoryItem], doomed: list[str]) -> None:
            self._agree(f"store_many({[i.id for i in batch]!r})", self.store.store_many(batch),
                        self.model.store_many(batch))
            ids = sorted(set(doomed) | {i.id for i in batch[:1]})
            self._agree(f"retrieve_many({ids!r})", _plain_items(self.store.retrieve_many(ids)),
                        _plain_items(self.model.retrieve_many(ids)))
            self._agree(f"delete_many({doomed!r})", self.store.delete_many(doomed), self.model.delete_many(doomed))

        @precondition(lambda self: self.persistent and self.tx is None)
        @rule()
        def reopen(self) -> None:
            self.store.close()
            self.store = factory(self.path)

        @precondition(lambda self: self.transactions and self.tx is None)
        @rule()
        def begin(self) -> None:
            self.tx = self.store.begin_transaction()
            self.model_tx = self.model.begin_transaction()

        @precondition(lambda self: self.tx is not None)
        @rule(commit=st.booleans())
        def finish(self, commit: bool) -> None:
            tx, model_tx = self.tx, self.model_tx
            self.tx = self.model_tx = None
            if commit:
                self.store.prepare_commit(tx)
                self.store.commit(tx)
                self.model.commit(model_tx)
            else:
                self.store.rollback(tx)
                self.model.rollback(model_tx)

        @precondition(lambda self: self.vectors and self.tx is None)
        @rule(item_id=IDS)
        def vector(self, item_id: str) -> None:
            got = self.store.retrieve_vector(item_id)
            expected = self.model.retrieve(item_id)
            self._agree(f"retrieve_vector({item_id!r})",
                        None if got is None else (got.id, got.content, got.memory_type, got.metadata),
                        None if expected is None else (expected.id, expected.content, expected.memory_type,
                                                       expected.metadata), "id, content, type, metadata")
            if got is not None:
                self._agree(f"len(retrieve_vector({item_id!r}).embedding)", len(got.embedding), self.store.dimension)

        @invariant()
        def same_items(self) -> None:
            _agree_states(_state(self.store), _state(self.model))

        def teardown(self) -> None:
            try:
                if self.tx is not None:
                    self.store.rollback(self.tx)
                self.store.close()
            finally:
                shutil.rmtree(self.folder, ignore_errors=True)

    return AdapterConformance


def run_stateful_conformance(factory: Callable[[str], Any], settings: Any = None, *, seed: int | None = 0,
                             blob: str | None = None, max_examples: int = 25, steps: int = 30) -> dict[str, Any]:
    """Check ``factory(path)`` (the same path again = reopen) against the in-memory reference store.

    ``settings`` (hypothesis.settings) overrides ``max_examples`` / ``steps``. ``seed`` makes the run
    repeat (None: a random one, reported on failure); ``blob`` replays one failure exactly (the
    ``reproduce_failure`` blob a failure reports). On a failure raises StatefulConformanceError whose
    message holds the shortest failing sequence Hypothesis found, the step where the adapter and the
    model disagreed, both values, and the seed and blob to reproduce it. Returns a summary otherwise."""
    import random

    import hypothesis
    from hypothesis import HealthCheck
    from hypothesis.reporting import with_reporter

    if seed is None and blob is None:
        seed = random.SystemRandom().randrange(2**32)
    settings = settings or hypothesis.settings(max_examples=max_examples, stateful_step_count=steps)
    settings = hypothesis.settings(settings, deadline=None, database=None, derandomize=False, print_blob=True,
                                   report_multiple_bugs=False,
                                   suppress_health_check=list(HealthCheck))
    machine = conformance_machine(factory)
    if blob is not None:
        machine = hypothesis.reproduce_failure(hypothesis.__version__, blob.encode())(machine)
    elif seed is not None:
        machine = hypothesis.seed(seed)(machine)
    lines: list[str] = []
    try:
        with with_reporter(lambda text: lines.append(str(text))):
            run_state_machine_as_test(machine, settings=settings)
    except Exception as exc:  # noqa: BLE001 - reported with everything needed to replay it
        raise _conformance_error(exc, lines, seed, blob) from exc
    return {"examples": settings.max_examples, "steps": settings.stateful_step_count, "seed": seed}


def _conformance_error(exc: BaseException, lines: list[str], seed: int | None,
                       blob: str | None) -> StatefulConformanceError:
    import re

    notes = [str(n) for n in getattr(exc, "__notes__", [])]
    text = "\n".join(lines + notes)
    # The invariant is checked after every step; its lines say nothing about what was done.
    steps = [line for line in (lines + notes) if line.startswith("state") and line != "state.same_items()"]
    found = re.search(r"@reproduce_failure\('[^']*', b'([^']*)'\)", text)
    blob = found.group(1) if found else blob
    disagreement = exc if isinstance(exc, Disagreement) else None
    step = disagreement.step if disagreement else f"the last step ({type(exc).__name__})"
    replay = f"run_stateful_conformance(factory, blob={blob!r})" if blob else f"run_stateful_conformance(factory, seed={seed})"
    message = "\n".join([
        f"stateful model: the adapter disagreed with the reference at {step}",
        "shortest failing sequence:",
        *(f"    {s}" for s in steps),
        str(exc) if disagreement else f"  error: {type(exc).__name__}: {exc}",
        f"reproduce: seed={seed}" + (f", blob={blob!r}" if blob else "") + f"  ->  {replay}",
    ])
    return StatefulConformanceError(message, steps=steps, step=step,
                                    adapter=disagreement.adapter if disagreement else None,
                                    model=disagreement.model if disagreement else None,
                                    seed=seed, blob=blob, cause=exc)
