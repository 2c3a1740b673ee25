"""Third-party-style adapters that pass the conformance kit yet leak on every open/close cycle.

Each is the guide's example adapter (examples/jsonfile_store.py) with one leak that only many
open/close cycles reveal; ``memsys verify-adapter --sections leaks`` must fail each one by the
checks named in ``CAUGHT_BY`` and by no other.
"""

from __future__ import annotations

import ctypes
import os
from typing import Any, ClassVar

from examples.jsonfile_store import JsonFileStore

MIB = 1 << 20


class KeepsABufferPerInstanceStore(JsonFileStore):
    """Keeps a 1 MiB read buffer per instance in a class-level list (a cache keyed by nothing):
    every open adds 1 MiB that closing never frees, on the Python heap."""

    _buffers: ClassVar[list[bytes]] = []

    def __init__(self, path: str, **kwargs: Any) -> None:
        super().__init__(path, **kwargs)
        self._buffers.append(b"\x01" * MIB)  # written, so the pages are resident


class NeverClosesAFileStore(JsonFileStore):
    """Opens its folder's snapshot descriptor to "watch" it and never closes it."""

    def __init__(self, path: str, **kwargs: Any) -> None:
        super().__init__(path, **kwargs)
        self._watch = os.open(self.path, os.O_RDONLY)  # close() forgets it: one descriptor per open


class LeaksNativeMemoryStore(JsonFileStore):
    """Allocates 1 MiB with the C library per open and never frees it (as a native engine's handle
    that is never released would): invisible to tracemalloc, seen only in resident memory."""

    def __init__(self, path: str, **kwargs: Any) -> None:
        super().__init__(path, **kwargs)
        libc = ctypes.CDLL(None)
        libc.malloc.restype = ctypes.c_void_p
        block = libc.malloc(MIB)
        ctypes.memset(block, 1, MIB)  # touched, so resident


CAUGHT_BY = {
    "KeepsABufferPerInstanceStore": {"resident_memory_flat", "python_heap_flat"},
    "NeverClosesAFileStore": {"no_files_or_threads_left_open"},
    "LeaksNativeMemoryStore": {"resident_memory_flat"},
}


class ForgetsWhatItStoredStore(JsonFileStore):
    """Reads never find anything: not a leak, but the leak cycle's read-back fails, so the section
    must report an error for every check rather than judge memory it could not measure."""

    def retrieve(self, item_id: str) -> Any:
        return None
