"""Routing: which stores hold an item, by its memory type and (optionally) its metadata.

    routing = {
        "CODE": ["duckdb", "faiss", "kuzu"],                  # document, vector and graph together
        "CONVERSATION": [
            {"metadata": {"channel": "support"}, "stores": ["lmdb", "chroma"]},
            {"stores": ["lmdb"]},                              # any other conversation
        ],
        "default": ["lmdb"],                                   # every other type
    }
    manager = MemoryManager(adapters, routing=routing, transaction_log=...)

A key is a MemoryType (the enum, its value or its name) or ``"default"``. A value is a list of
store names, or a list of rules tried in order: ``{"metadata": {key: value, ...}, "stores":
[...]}`` matches an item whose metadata has every key with an equal value (a list of values
means any of them); a rule without ``metadata`` matches every item of the type. An item whose
type has no matching rule goes to the default, which is every store of the manager unless
given. Everything is checked when the manager is built: unknown stores, unknown types, empty
routes and rule typos are refused with InvalidInputError.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from memsys.domain.errors import InvalidInputError, MemsysError
from memsys.domain.model import MemoryItem, MemoryType

DEFAULT = "default"


@dataclasses.dataclass(frozen=True, eq=False)
class Route:
    """Stores for the items of ``memory_type`` (None: the default route) whose metadata matches."""

    stores: tuple[str, ...]
    memory_type: MemoryType | None = None
    metadata: tuple[tuple[str, tuple[Any, ...]], ...] = ()

    def matches(self, item: MemoryItem) -> bool:
        metadata = item.metadata or {}
        return all(key in metadata and _equal_any(metadata[key], accepted) for key, accepted in self.metadata)

    def describe(self) -> str:
        kind = self.memory_type.name if self.memory_type is not None else DEFAULT
        where = " and ".join(f"{k} in {list(v)}" for k, v in self.metadata)
        return f"{kind}{' where ' + where if where else ''} -> {list(self.stores)}"


class RoutingTable:
    def __init__(self, table: Mapping[Any, Any] | None, stores: Sequence[str]) -> None:
        """Build and check ``table`` (see the module docstring) against the manager's ``stores``."""
        self.stores = list(stores)
        self._known = set(stores)
        self.by_type: dict[MemoryType, list[Route]] = {}
        default: tuple[str, ...] = tuple(stores)
        if table is not None and not isinstance(table, Mapping):
            raise InvalidInputError(f"routing must be a dict of memory type -> stores, got {type(table).__name__}")
        for key, value in (table or {}).items():
            if key == DEFAULT:
                default = self._store_list(value, "the default route")
                continue
            try:
                memory_type = MemoryType.from_raw(key)
            except MemsysError as exc:
                raise InvalidInputError(f"routing key {key!r} is neither a memory type nor {DEFAULT!r}: {exc}") \
                    from exc
            if memory_type in self.by_type:
                raise InvalidInputError(f"routing names memory type {memory_type.name} twice")
            self.by_type[memory_type] = self._rules(memory_type, value)
        if not default:
            raise InvalidInputError("routing: the default route has no stores")
        self.default = Route(default)

    def _store_list(self, value: Any, what: str) -> tuple[str, ...]:
        if isinstance(value, str) or not isinstance(value, Iterable):
            raise InvalidInputError(f"routing: {what} must be a list of store names, got {value!r}")
        names = list(dict.fromkeys(value))
        if not names:
            raise InvalidInputError(f"routing: {what} has no stores")
        unknown = sorted(str(n) for n in names if n not in self._known)
        if unknown:
            raise InvalidInputError(f"routing: {what} names unknown stores {unknown}; the manager has "
                                    f"{sorted(self._known)}")
        return tuple(names)

    def _rules(self, memory_type: MemoryType, value: Any) -> list[Route]:
        what = f"the route of {memory_type.name}"
        if isinstance(value, (list, tuple)) and value and all(isinstance(v, Mapping) for v in value):
            rules = []
            for n, rule in enumerate(value):
                unknown = sorted(set(rule) - {"metadata", "stores"})
                if unknown or "stores" not in rule:
                    raise InvalidInputError(f"routing: rule {n} of {memory_type.name} must have 'stores' and may "
                                            f"have 'metadata' (got keys {sorted(rule)})")
                conditions = rule.get("metadata") or {}
                if not isinstance(conditions, Mapping) or not all(isinstance(k, str) for k in conditions):
                    raise InvalidInputError(f"routing: rule {n} of {memory_type.name}: 'metadata' must be a dict "
                                            "of str keys")
                metadata = tuple(sorted((k, tuple(v) if isinstance(v, (list, tuple)) else (v,))
                                        for k, v in conditions.items()))
                rules.append(Route(self._store_list(rule["stores"], f"rule {n} of {memory_type.name}"),
                                   memory_type, metadata))
            return rules
        return [Route(self._store_list(value, what), memory_type)]

    def route(self, item: MemoryItem) -> Route:
        """The route ``item`` takes: the first matching rule of its type, else the default."""
        for rule in self.by_type.get(item.memory_type, ()):
            if rule.matches(item):
                return rule
        return self.default

    def stores_for(self, item: MemoryItem) -> list[str]:
        return list(self.route(item).stores)

    def routes_for(self, memory_types: Iterable[MemoryType] | None) -> list[Route]:
        """Every route an item of these types (None: of any type) may have taken."""
        if memory_types is None:
            routes = [r for rules in self.by_type.values() for r in rules]
            return routes + [self.default]
        routes = []
        for memory_type in memory_types:
            rules = self.by_type.get(memory_type, [])
            routes.extend(rules)
            if all(r.metadata for r in rules):  # no catch-all rule: some items fall through to the default
                routes.append(self.default)
        unique: list[Route] = []
        for route in routes:  # by identity: metadata values need not be hashable
            if not any(route is u for u in unique):
                unique.append(route)
        return unique

    def describe(self) -> list[str]:
        return [r.describe() for rules in self.by_type.values() for r in rules] + [self.default.describe()]


def _equal_any(value: Any, accepted: tuple[Any, ...]) -> bool:
    # A bool never equals a number (True == 1 in Python), as in MemoryQuery's metadata match.
    return any(value == a and isinstance(value, bool) == isinstance(a, bool) for a in accepted)


__all__ = ["DEFAULT", "Route", "RoutingTable"]
