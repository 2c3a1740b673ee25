"""QueryRouter: send a query to the stores that can answer it, merge what they return.

    router = QueryRouter(manager, deadline=0.5)                            # seconds per store
    router.execute({"id": "item-1"})                                       # id lookup, every store
    router.execute({"memory_type": "CODE", "metadata": {"repo": "x"}})     # structured stores first
    router.execute("vector search")                                        # text (content substring)
    router.execute({"similar_to": "vector search in rust", "top_k": 5})    # vector stores, by similarity
    router.execute({"related_to": "item-1", "depth": 2})                   # graph stores, by traversal
    router.execute(query, mode="cascading", enough=3)                      # stop at the first store with 3
    router.execute(query, mode="direct", stores=["duckdb"])                # one store, no fallback
    router.execute(query, all_or_error=True)                               # any failing store: an error

What the query asks decides the stores (``route``): an id lookup ({"id": ...}, or only "ids")
goes to every store; a structured filter or a text query to the stores that push filters down
(STRUCTURED_QUERY) first, then the rest; ``similar_to`` to the VECTOR_SEARCH stores; and
``related_to`` to the GRAPH stores. Modes:

* ``federated`` (default): every routed store, in parallel; results merged.
* ``cascading``: routed stores one after another by priority; stop at the first whose answer
  has ``enough`` hits (default: the query's ``top_k`` or ``limit``, else 1); the answers met on
  the way are merged.
* ``direct``: one store (``stores=[name]``, else the best-suited one); no fallback.
* ``cross_store``: federated, then every hit is looked up by id in every other store of the
  manager, so each hit names every store that holds it and carries the newest version of it
  (a vector hit from FAISS joined with its record in DuckDB, say).

Results are merged by id (the newest version wins, a similarity hit keeps its best score),
ranked (by similarity for ``similar_to``, else as a search orders them: created_at, id) and
each ``RoutedHit`` carries the stores it came from. Every store call has the per-store
``deadline``: a store that fails or does not answer in time is left out and reported in
``RouterResult.failures`` (a typed error: DeadlineExceededError for a timeout), unless the
caller asks for ``all_or_error``, which raises MemoryRetrievalError naming every failure. If
every store fails, MemoryRetrievalError. A caller's bad query (InvalidQueryError) is raised as
it is. Only stored items are ever returned. Inside a transaction the stores are asked on the
caller's thread (so the transaction's own writes are seen), and the deadline cannot interrupt them.

``query()`` is the earlier list-returning form (federated), kept for callers of the guide's API.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from memsys.domain.errors import (
    DeadlineExceededError,
    InvalidInputError,
    InvalidQueryError,
    MemoryRetrievalError,
    MemsysError,
    StoreError,
)
from memsys.domain.model import MemoryItem, ScoredItem, check_id
from memsys.domain.query import MemoryQuery, sort_key
from memsys.ports import Capability

if TYPE_CHECKING:
    from memsys.application.manager import MemoryManager

_ROUTING_KEYS = ("similar_to", "top_k", "related_to", "depth", "rel_type", "direction", "id")
MODES = ("federated", "cascading", "direct", "cross_store")
KINDS = ("id", "structured", "text", "vector", "graph")


@dataclasses.dataclass(frozen=True)
class RoutedHit:
    """One result: the item (newest version seen), the stores that returned it, its similarity."""

    item: MemoryItem
    sources: tuple[str, ...]
    score: float | None = None

    @property
    def id(self) -> str:
        return self.item.id


@dataclasses.dataclass
class RouterResult:
    """What a routed query returned: ranked hits, the stores asked and answering, and the typed
    error of each store that failed or timed out."""

    kind: str
    mode: str
    hits: list[RoutedHit]
    asked: list[str]
    answered: list[str]
    failures: dict[str, MemsysError]

    @property
    def items(self) -> list[MemoryItem]:
        return [h.item for h in self.hits]

    @property
    def complete(self) -> bool:
        """True when every store asked answered."""
        return not self.failures

    def sources(self, item_id: str) -> tuple[str, ...]:
        for hit in self.hits:
            if hit.item.id == item_id:
                return hit.sources
        return ()

    def __iter__(self) -> Any:
        return iter(self.hits)

    def __len__(self) -> int:
        return len(self.hits)


class _Call:
    """One store call on its own daemon thread, so a hung store cannot hold the query past its
    deadline (the thread is abandoned; it ends when the store answers or fails)."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        self.done = threading.Event()
        self.result: Any = None
        self.error: BaseException | None = None
        self._fn = fn
        threading.Thread(target=self._run, name="memsys-router-call", daemon=True).start()

    def _run(self) -> None:
        try:
            self.result = self._fn()
        except BaseException as exc:  # handed to the caller's thread
            self.error = exc
        finally:
            self.done.set()


class QueryRouter:
    def __init__(self, manager: MemoryManager, *, deadline: float | None = None) -> None:
        self.manager = manager
        self.deadline = _check_deadline(deadline)
        #: The failures of the last query (store -> error), as RouterResult.failures.
        self.last_errors: dict[str, BaseException] = {}

    # --- routing

    def _with(self, capability: Capability) -> list[str]:
        return [name for name in self.manager.store_priorities
                if capability in getattr(self.manager.adapters[name], "capabilities", ())]

    def classify(self, query: Any) -> str:
        """What the query asks: "id", "structured", "text", "vector" or "graph"."""
        routing, rest = self._split(query)
        if "similar_to" in routing:
            return "vector"
        if "related_to" in routing:
            return "graph"
        if "id" in routing:
            return "id"
        filters = MemoryQuery.parse(rest)
        if filters.ids is not None and dataclasses.replace(filters, ids=None, limit=None) == MemoryQuery():
            return "id"
        return "text" if filters.content is not None else "structured"

    def route(self, query: Any) -> list[str]:
        """The stores that can answer ``query``, best suited first."""
        kind = self.classify(query)
        if kind == "vector":
            stores = self._with(Capability.VECTOR_SEARCH)
        elif kind == "graph":
            stores = self._with(Capability.GRAPH)
        elif kind == "id":
            stores = list(self.manager.store_priorities)
        else:
            structured = self._with(Capability.STRUCTURED_QUERY)
            stores = structured + [s for s in self.manager.store_priorities if s not in structured]
        if not stores:
            raise InvalidQueryError(f"no store of this manager can answer a {kind} query")
        return stores

    @staticmethod
    def _split(query: Any) -> tuple[dict[str, Any], Any]:
        if not isinstance(query, dict):
            return {}, query
        routing = {k: query[k] for k in _ROUTING_KEYS if k in query}
        rest = {k: v for k, v in query.items() if k not in _ROUTING_KEYS}
        if "similar_to" in routing and "related_to" in routing:
            raise InvalidQueryError("a query is either similar_to or related_to, not both")
        if "id" in routing:
            check_id(routing["id"], "query 'id'")
            if "similar_to" in routing or "related_to" in routing:
                raise InvalidQueryError("an id lookup takes no similar_to / related_to")
        return routing, rest

    # --- running

    def execute(self, query: Any, *, mode: str = "federated", stores: Sequence[str] | None = None,
                deadline: float | None = None, all_or_error: bool = False, enough: int | None = None
                ) -> RouterResult:
        """Run ``query`` (see the module docstring); ``deadline`` (seconds per store) overrides the
        router's."""
        if mode not in MODES:
            raise InvalidInputError(f"unknown mode {mode!r}; use one of {MODES}")
        if enough is not None and (isinstance(enough, bool) or not isinstance(enough, int) or enough < 1):
            raise InvalidInputError(f"enough must be a positive int, got {enough!r}")
        deadline = self.deadline if deadline is None else _check_deadline(deadline)
        kind = self.classify(query)
        routing, rest = self._split(query)
        filters = MemoryQuery.parse(rest)
        if kind == "id" and "id" in routing:
            filters = dataclasses.replace(filters, ids=frozenset([routing["id"]]))
        if stores is not None:
            targets = list(stores)
            for name in targets:
                self.manager._adapter(name)
        else:
            targets = self.route(query)
        if mode == "direct":
            targets = targets[:1]
        if not targets:
            raise InvalidInputError("no store to ask")
        answers: dict[str, list[Any]] = {}
        failures: dict[str, MemsysError] = {}
        if mode == "cascading":
            want = enough or routing.get("top_k") or filters.limit or 1
            for name in targets:
                self._gather([name], kind, routing, filters, deadline, answers, failures)
                if len(answers.get(name, ())) >= want:
                    break
            asked = [n for n in targets if n in answers or n in failures]
        else:
            self._gather(targets, kind, routing, filters, deadline, answers, failures)
            asked = list(targets)
        self.last_errors = dict(failures)
        if not answers:
            raise MemoryRetrievalError(
                "every store failed the query: " + "; ".join(f"{n}: {e}" for n, e in failures.items()), failures)
        if all_or_error and failures:
            raise MemoryRetrievalError(
                "stores failed the query (all_or_error): " + "; ".join(f"{n}: {e}" for n, e in failures.items()),
                failures)
        hits = self._merge(kind, answers, routing, filters)
        if mode == "cross_store" and hits:
            hits = self._join(hits, answers, deadline, failures, all_or_error)
        return RouterResult(kind=kind, mode=mode, hits=hits, asked=asked,
                            answered=[n for n in asked if n in answers], failures=failures)

    def query(self, query: Any, stores: Sequence[str] | None = None) -> list[Any]:
        """The hits of a federated query as a list: ScoredItems for ``similar_to``, else items.
        Failing stores are named in ``last_errors``."""
        result = self.execute(query, stores=stores)
        if result.kind == "vector":
            return [ScoredItem(h.item, h.score if h.score is not None else 0.0) for h in result.hits]
        return result.items

    def _gather(self, targets: Sequence[str], kind: str, routing: dict[str, Any], filters: MemoryQuery,
                deadline: float | None, answers: dict[str, list[Any]], failures: dict[str, MemsysError]) -> None:
        calls = {name: self._task(name, kind, routing, filters) for name in targets}
        if self.manager.coordinator.current() is not None or (deadline is None and len(calls) == 1):
            # A transaction's writes are visible on its own thread only: ask the stores here.
            for name, task in calls.items():
                self._settle(name, task, answers, failures)
            return
        started = {name: _Call(task) for name, task in calls.items()}
        until = None if deadline is None else time.monotonic() + deadline
        for name, call in started.items():
            left = None if until is None else max(0.0, until - time.monotonic())
            if not call.done.wait(left):
                failures[name] = DeadlineExceededError(
                    f"store {name!r} did not answer the {kind} query within its deadline of {deadline:g} s",
                    store=name)
                continue
            self._settle(name, call, answers, failures)

    @staticmethod
    def _settle(name: str, source: Callable[[], Any] | _Call, answers: dict[str, list[Any]],
                failures: dict[str, MemsysError]) -> None:
        """File a store's answer, or its failure (typed); a caller's bad query is raised."""
        if isinstance(source, _Call):
            error, result = source.error, source.result
        else:
            try:
                error, result = None, source()
            except BaseException as exc:
                error, result = exc, None
        if error is None:
            answers[name] = result
        elif isinstance(error, InvalidQueryError):
            raise error
        elif isinstance(error, MemsysError):
            failures[name] = error
        elif isinstance(error, Exception):  # an untyped escape from a third-party store: still a failure
            failures[name] = StoreError(f"store {name!r} failed the query: {type(error).__name__}: {error}",
                                        store=name)
            failures[name].__cause__ = error
        else:
            raise error

    def _task(self, name: str, kind: str, routing: dict[str, Any], filters: MemoryQuery) -> Callable[[], Any]:
        adapter = self.manager._adapter(name)
        # Through the manager's guarded call: breaker, timing, DEBUG line and span in one place.
        return lambda: self.manager.call(name, "query", self._ask, adapter, kind, routing, filters)

    def _ask(self, adapter: Any, kind: str, routing: dict[str, Any], filters: MemoryQuery) -> list[Any]:
        if kind == "vector":
            target = routing["similar_to"]
            top_k = routing.get("top_k", 5)
            embedding = adapter.embed_texts([target])[0] if isinstance(target, str) else target
            where = None if filters == MemoryQuery() else filters
            return list(adapter.similar_items(embedding, top_k=top_k, query=where))
        if kind == "graph":
            found = adapter.neighbors(routing["related_to"], depth=routing.get("depth", 1),
                                      direction=routing.get("direction", "out"), rel_type=routing.get("rel_type"))
            return [item for item in found if filters.matches(item)]
        if kind == "id":
            found = adapter.retrieve_many(sorted(filters.ids or ())) if hasattr(adapter, "retrieve_many") else {
                i: it for i in sorted(filters.ids or ()) if (it := adapter.retrieve(i)) is not None}
            return [item for item in found.values() if filters.matches(item)]
        return list(adapter.search(filters))

    # --- merging

    def _merge(self, kind: str, answers: dict[str, list[Any]], routing: dict[str, Any],
               filters: MemoryQuery) -> list[RoutedHit]:
        order = {name: i for i, name in enumerate(self.manager.store_priorities)}
        best: dict[str, MemoryItem] = {}
        scores: dict[str, float] = {}
        sources: dict[str, list[str]] = {}
        for name, found in answers.items():
            for hit in found:
                item, score = (hit.item, hit.score) if isinstance(hit, ScoredItem) else (hit, None)
                if item.id not in best or item.version > best[item.id].version:
                    best[item.id] = item
                if score is not None and (item.id not in scores or score > scores[item.id]):
                    scores[item.id] = score
                sources.setdefault(item.id, [])
                if name not in sources[item.id]:
                    sources[item.id].append(name)
        hits = [RoutedHit(item, tuple(sorted(sources[i], key=lambda n: order.get(n, len(order)))), scores.get(i))
                for i, item in best.items()]
        if kind == "vector":
            hits.sort(key=lambda h: (-(h.score or 0.0), h.item.id))
            return hits[: routing.get("top_k", 5)]
        hits.sort(key=lambda h: sort_key(h.item))
        return hits if filters.limit is None else hits[: filters.limit]

    def _join(self, hits: list[RoutedHit], answers: dict[str, list[Any]], deadline: float | None,
              failures: dict[str, MemsysError], all_or_error: bool) -> list[RoutedHit]:
        """Look every hit up by id in the stores that were not asked, so each hit names every
        store that holds it and carries the newest version of it."""
        others = [n for n in self.manager.store_priorities if n not in answers and n not in failures]
        if not others:
            return hits
        lookup = MemoryQuery(ids=frozenset(h.item.id for h in hits))
        found: dict[str, list[Any]] = {}
        self._gather(others, "id", {}, lookup, deadline, found, failures)
        if all_or_error and failures:
            raise MemoryRetrievalError(
                "stores failed the query (all_or_error): " + "; ".join(f"{n}: {e}" for n, e in failures.items()),
                failures)
        order = {name: i for i, name in enumerate(self.manager.store_priorities)}
        by_id = {h.item.id: h for h in hits}
        for name, items in found.items():
            for item in items:
                hit = by_id[item.id]
                newest = item if item.version > hit.item.version else hit.item
                by_id[item.id] = RoutedHit(newest, tuple(sorted({*hit.sources, name},
                                                                key=lambda n: order.get(n, len(order)))), hit.score)
        return [by_id[h.item.id] for h in hits]


def _check_deadline(deadline: Any) -> float | None:
    if deadline is None:
        return None
    if isinstance(deadline, bool) or not isinstance(deadline, (int, float)) or not deadline > 0 \
            or deadline != deadline or deadline == float("inf"):
        raise InvalidInputError(f"deadline must be a positive number of seconds or None, got {deadline!r}")
    return float(deadline)


__all__ = ["KINDS", "MODES", "QueryRouter", "RoutedHit", "RouterResult"]
