"""Retry with exponential backoff and jitter: only transient errors, only idempotent calls.

    @retry_with_backoff(max_retries=3, initial_backoff=0.1)
    def read(item_id): ...

A retry happens only when the error says a retry may help (``transient``:
a store unavailable, a deadline passed, an open circuit) and the call is
idempotent; everything else is raised at once. Each wait is the backoff
scaled by a random factor in [1 - jitter, 1] (seeded if you pass ``rng``),
capped by ``max_backoff``, and no wait starts past ``deadline`` seconds.
memsys' own writes by id (store, delete) are idempotent; a transaction's
commit is not retried here (a conflict means re-running its logic).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

from memsys.domain.errors import InvalidInputError

T = TypeVar("T")


def retry_with_backoff(max_retries: int = 3, initial_backoff: float = 1.0, backoff_multiplier: float = 2.0, *,
                       max_backoff: float = 30.0, jitter: float = 0.5, deadline: float | None = None,
                       idempotent: bool = True, rng: random.Random | None = None,
                       sleep: Callable[[float], None] = time.sleep) -> Callable[[Callable[..., T]], Callable[..., T]]:
    """``max_retries`` attempts in all (the guide's meaning), waits growing by ``backoff_multiplier``."""
    if max_retries < 1 or initial_backoff < 0 or backoff_multiplier < 1 or not 0 <= jitter <= 1:
        raise InvalidInputError("retry_with_backoff: max_retries >= 1, initial_backoff >= 0, "
                                "backoff_multiplier >= 1 and 0 <= jitter <= 1")
    chance = rng or random.Random()

    def decorator(func: Callable[..., T]) -> Callable[..., T]:
        @wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> T:
            started = time.monotonic()
            backoff = initial_backoff
            for attempt in range(1, max_retries + 1):
                try:
                    return func(*args, **kwargs)
                except Exception as exc:
                    if attempt == max_retries or not idempotent or not getattr(exc, "transient", False):
                        raise
                    wait = min(max_backoff, backoff) * (1.0 - jitter * chance.random())
                    if deadline is not None and time.monotonic() - started + wait > deadline:
                        raise
                    sleep(wait)
                    backoff *= backoff_multiplier
            raise AssertionError("unreachable")  # pragma: no cover

        return wrapper

    return decorator
