"""The search query every store understands, and its one definition of a match.

A query is a dict (or a string, shorthand for ``{"content": string}``):

    memory_type      a MemoryType, value or name, or a list of them (any of)
    metadata         {key: value}: every key present with an equal value (JSON equality:
                     numbers compare by value, but a bool never equals a number, at any depth)
    metadata.<key>   the same for one key (DevSynth's spelling); any key the item model
                     accepts may be queried ("", non-ASCII, control characters)
    content          case-insensitive substring of the content (JSON text if not a str)
    ids              a list of ids (any of)
    created_after    datetime, inclusive;  created_before  datetime, exclusive
    updated_after    datetime, inclusive;  updated_before  datetime, exclusive
    limit            at most this many results

Results are ordered by (created_at, id). Stores may push parts of a query down
to their engine, but the final word is ``MemoryQuery.matches``, so every store
returns the same items for the same query.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from memsys.domain.errors import InvalidQueryError, MemsysError
from memsys.domain.model import MemoryItem, MemoryType, as_utc, freeze_json, shown

_KEYS = ("memory_type", "metadata", "content", "ids", "created_after", "created_before",
         "updated_after", "updated_before", "limit")


@dataclasses.dataclass(frozen=True)
class MemoryQuery:
    memory_types: frozenset[MemoryType] | None = None
    metadata: tuple[tuple[str, Any], ...] = ()
    content: str | None = None
    ids: frozenset[str] | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    updated_after: datetime | None = None
    updated_before: datetime | None = None
    limit: int | None = None

    @classmethod
    def parse(cls, query: object) -> MemoryQuery:
        if isinstance(query, MemoryQuery):
            return query
        if isinstance(query, str):
            query = {"content": query}
        if query is None:
            query = {}
        if not isinstance(query, Mapping):
            raise InvalidQueryError(f"a query is a dict or a str, got {type(query).__name__}")
        fields: dict[str, Any] = {}
        metadata: dict[str, Any] = {}
        for key, value in query.items():
            if not isinstance(key, str):
                raise InvalidQueryError(f"query key {shown(key)} is not a str")
            if key.startswith("metadata.") and len(key) > len("metadata."):
                metadata[key[len("metadata."):]] = _metadata_value(key, value)
            elif key == "metadata":
                if not isinstance(value, Mapping):
                    raise InvalidQueryError("query 'metadata' must be a dict of key: value")
                for name, expected in value.items():
                    if not isinstance(name, str):
                        raise InvalidQueryError(f"query 'metadata' key {shown(name)} is not a str")
                    metadata[name] = _metadata_value(f"metadata[{name!r}]", expected)
            elif key == "memory_type":
                values = value if isinstance(value, (list, tuple, set, frozenset)) else [value]
                try:
                    fields["memory_types"] = frozenset(MemoryType.from_raw(v) for v in values)
                except MemsysError as exc:
                    raise InvalidQueryError(f"query 'memory_type': {exc}") from exc
            elif key == "content":
                if not isinstance(value, str):
                    raise InvalidQueryError("query 'content' must be a str")
                fields["content"] = value.casefold()
            elif key == "ids":
                if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Iterable):
                    raise InvalidQueryError(f"query 'ids' must be a list of str, got {type(value).__name__}")
                ids = list(value)
                for item_id in ids:  # before hashing: an unhashable element must not escape as TypeError
                    if not isinstance(item_id, str):
                        raise InvalidQueryError(f"query 'ids' must be a list of str, got an element {shown(item_id)}")
                fields["ids"] = frozenset(ids)
            elif key in ("created_after", "created_before", "updated_after", "updated_before"):
                try:
                    fields[key] = as_utc(value, f"query {key!r}")
                except MemsysError as exc:
                    raise InvalidQueryError(str(exc)) from exc
            elif key == "limit":
                if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                    raise InvalidQueryError("query 'limit' must be a non-negative int")
                fields["limit"] = value
            else:
                raise InvalidQueryError(f"unknown query key {key!r}; known keys: {', '.join(_KEYS)}")
        fields["metadata"] = tuple(sorted(metadata.items()))
        return cls(**fields)

    def matches(self, item: MemoryItem) -> bool:
        if self.ids is not None and item.id not in self.ids:
            return False
        if self.memory_types is not None and item.memory_type not in self.memory_types:
            return False
        if self.created_after is not None and item.created_at < self.created_after:  # type: ignore[operator]
            return False
        if self.created_before is not None and item.created_at >= self.created_before:  # type: ignore[operator]
            return False
        if self.updated_after is not None and item.updated_at < self.updated_after:  # type: ignore[operator]
            return False
        if self.updated_before is not None and item.updated_at >= self.updated_before:  # type: ignore[operator]
            return False
        metadata = item.metadata or {}
        for key, value in self.metadata:
            if key not in metadata or not _json_equal(metadata[key], value):
                return False
        if self.content is not None and self.content not in content_text(item.content).casefold():
            return False
        return True

    def select(self, items: Iterable[MemoryItem]) -> list[MemoryItem]:
        """Filter, order and limit: the reference semantics of ``search``."""
        hits = sorted((i for i in items if self.matches(i)), key=sort_key)
        return hits if self.limit is None else hits[: self.limit]


def sort_key(item: MemoryItem) -> tuple[datetime, str]:
    return (item.created_at, item.id)  # type: ignore[return-value]


def content_text(content: Any) -> str:
    """The text a content search looks in."""
    return content if isinstance(content, str) else json.dumps(content, ensure_ascii=False, sort_keys=True)


def _metadata_value(where: str, value: object) -> Any:
    """A query's expected metadata value: a JSON value (so push-down and ``matches`` agree), copied."""
    try:
        return freeze_json(value, f"query {where}")
    except MemsysError as exc:
        raise InvalidQueryError(str(exc)) from exc


def _json_equal(a: Any, b: Any) -> bool:
    # True == 1 in Python but not in JSON; metadata filters compare as JSON does, at any depth.
    if isinstance(a, (dict, list)) or isinstance(b, (dict, list)):
        if isinstance(a, dict) and isinstance(b, dict):
            return a.keys() == b.keys() and all(_json_equal(a[k], b[k]) for k in a)
        if isinstance(a, list) and isinstance(b, list):
            return len(a) == len(b) and all(_json_equal(x, y) for x, y in zip(a, b))
        return False
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    return a == b
