"""Domain layer: items, types, queries, operations and the error tree."""

from memsys.domain.errors import *  # noqa: F401,F403
from memsys.domain.errors import __all__ as _error_names
from memsys.domain.model import (
    MemoryItem,
    MemoryType,
    MemoryVector,
    Relationship,
    ScoredItem,
    SerializedMemoryItem,
)
from memsys.domain.query import MemoryQuery

__all__ = [
    "MemoryItem", "MemoryQuery", "MemoryType", "MemoryVector", "Relationship", "ScoredItem",
    "SerializedMemoryItem", *_error_names,
]
