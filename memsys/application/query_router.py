"""QueryRouter: send a query to the stores that can answer it, merge what they return.

    router.query({"memory_type": "CODE", "metadata": {"repo": "x"}})     # every store (structured first)
    router.query({"similar_to": "vector search in rust", "top_k": 5})    # vector stores, by similarity
    router.query({"related_to": "item-1", "depth": 2})                   # graph stores, by traversal

Results from several stores are merged by id, the newest version winning, and
ordered as a search orders them (by similarity for ``similar_to``). A store
that fails is left out and named in ``last_errors``; if every store fails the
query raises MemoryRetrievalError. Only stored items are ever returned.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from memsys.domain.errors import InvalidQueryError, MemoryRetrievalError, MemsysError
from memsys.domain.model import MemoryItem, ScoredItem
from memsys.domain.query import MemoryQuery, sort_key
from memsys.ports import Capability

if TYPE_CHECKING:
    from memsys.application.manager import MemoryManager

_ROUTING_KEYS = ("similar_to", "top_k", "related_to", "depth", "rel_type", "direction")


class QueryRouter:
    def __init__(self, manager: MemoryManager) -> None:
        self.manager = manager
        self.last_errors: dict[str, BaseException] = {}

    def _with(self, capability: Capability) -> list[str]:
        return [name for name in self.manager.store_priorities
                if capability in getattr(self.manager.adapters[name], "capabilities", ())]

    def route(self, query: Any) -> list[str]:
        """The stores that can answer ``query``, best suited first."""
        routing = self._split(query)[0]
        if "similar_to" in routing:
            stores = self._with(Capability.VECTOR_SEARCH)
        elif "related_to" in routing:
            stores = self._with(Capability.GRAPH)
        else:
            structured = self._with(Capability.STRUCTURED_QUERY)
            stores = structured + [s for s in self.manager.store_priorities if s not in structured]
        if not stores:
            raise InvalidQueryError(f"no store of this manager can answer {sorted(routing) or 'this query'}")
        return stores

    @staticmethod
    def _split(query: Any) -> tuple[dict[str, Any], Any]:
        if not isinstance(query, dict):
            return {}, query
        routing = {k: query[k] for k in _ROUTING_KEYS if k in query}
        rest = {k: v for k, v in query.items() if k not in _ROUTING_KEYS}
        if routing and "similar_to" in routing and "related_to" in routing:
            raise InvalidQueryError("a query is either similar_to or related_to, not both")
        return routing, rest

    def query(self, query: Any, stores: Sequence[str] | None = None) -> list[Any]:
        routing, rest = self._split(query)
        filters = MemoryQuery.parse(rest)
        targets = list(stores) if stores is not None else self.route(query)
        self.last_errors = {}
        answers: dict[str, list[Any]] = {}
        for name in targets:
            adapter = self.manager._adapter(name)
            try:
                answers[name] = self.manager.breakers[name].execute(self._ask, adapter, routing, filters)
            except InvalidQueryError:
                raise
            except MemsysError as exc:
                self.last_errors[name] = exc
        if not answers:
            raise MemoryRetrievalError(f"every store failed the query: {self.last_errors}", self.last_errors)
        if "similar_to" in routing:
            return self._merge_scored(answers, routing.get("top_k", 5))
        merged: dict[str, MemoryItem] = {}
        for items in answers.values():
            for item in items:
                if item.id not in merged or item.version > merged[item.id].version:
                    merged[item.id] = item
        if "related_to" in routing:
            return list(merged.values())
        hits = sorted(merged.values(), key=sort_key)
        return hits if filters.limit is None else hits[: filters.limit]

    def _ask(self, adapter: Any, routing: dict[str, Any], filters: MemoryQuery) -> list[Any]:
        if "similar_to" in routing:
            target = routing["similar_to"]
            top_k = routing.get("top_k", 5)
            embedding = adapter.embed_texts([target])[0] if isinstance(target, str) else target
            where = None if filters == MemoryQuery() else filters
            return adapter.similar_items(embedding, top_k=top_k, query=where)
        if "related_to" in routing:
            found = adapter.neighbors(routing["related_to"], depth=routing.get("depth", 1),
                                      direction=routing.get("direction", "out"), rel_type=routing.get("rel_type"))
            return [item for item in found if filters.matches(item)]
        return adapter.search(filters)

    @staticmethod
    def _merge_scored(answers: dict[str, list[ScoredItem]], top_k: int) -> list[ScoredItem]:
        best: dict[str, ScoredItem] = {}
        for hits in answers.values():
            for hit in hits:
                if hit.item.id not in best or hit.score > best[hit.item.id].score:
                    best[hit.item.id] = hit
        return sorted(best.values(), key=lambda h: (-h.score, h.item.id))[:top_k]
