from __future__ import annotations

import random
import threading

import pytest

from memsys import (
    CircuitBreaker,
    CircuitBreakerOpenError,
    InvalidInputError,
    StoreError,
    StoreUnavailableError,
    retry_with_backoff,
)
from memsys.resilience.cache import ReadThroughCache
from memsys.resilience.circuit_breaker import CircuitState


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def failing(error=StoreUnavailableError):
    def call():
        raise error("down")
    return call


def test_breaker_opens_after_consecutive_failures_and_rejects_fast() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failure_threshold=3, reset_timeout=10, name="lmdb", clock=clock)
    for _ in range(2):
        with pytest.raises(StoreUnavailableError):
            breaker.execute(failing())
    assert breaker.state is CircuitState.CLOSED
    assert breaker.execute(lambda: "ok") == "ok" and breaker.failure_count == 0  # success resets the count
    for _ in range(3):
        with pytest.raises(StoreUnavailableError):
            breaker.execute(failing())
    assert breaker.state is CircuitState.OPEN and breaker.opened == 1
    calls = []
    with pytest.raises(CircuitBreakerOpenError) as rejected:
        breaker.execute(lambda: calls.append(1))
    assert not calls and rejected.value.store == "lmdb" and rejected.value.retry_after == pytest.approx(10)
    assert rejected.value.transient


def test_half_open_lets_one_probe_through_and_its_outcome_decides() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failure_threshold=1, reset_timeout=5, clock=clock)
    with pytest.raises(StoreError):
        breaker.execute(failing(StoreError))
    clock.now += 5
    assert breaker.state is CircuitState.HALF_OPEN
    with pytest.raises(StoreError):
        breaker.execute(failing(StoreError))  # the probe fails: open again, for a full timeout
    assert breaker.state is CircuitState.OPEN and breaker.opened == 2
    clock.now += 5
    inside = threading.Event()
    release = threading.Event()
    results = []

    def slow_probe():
        inside.set()
        release.wait(10)
        return "probed"

    t = threading.Thread(target=lambda: results.append(breaker.execute(slow_probe)))
    t.start()
    inside.wait(10)
    with pytest.raises(CircuitBreakerOpenError, match="probe is running"):
        breaker.execute(lambda: "second")
    release.set()
    t.join(10)
    assert results == ["probed"] and breaker.state is CircuitState.CLOSED


def test_caller_errors_do_not_trip_the_breaker() -> None:
    breaker = CircuitBreaker(failure_threshold=1)
    for _ in range(3):
        with pytest.raises(InvalidInputError):
            breaker.execute(failing(InvalidInputError))
    assert breaker.state is CircuitState.CLOSED


def test_breaker_as_a_decorator_and_under_threads() -> None:
    breaker = CircuitBreaker(failure_threshold=50, reset_timeout=60)

    @breaker
    def flaky(n):
        if n % 2:
            raise StoreUnavailableError("odd")
        return n

    errors = []

    def hammer():
        for n in range(200):
            try:
                flaky(n)
            except (StoreUnavailableError, CircuitBreakerOpenError) as exc:
                errors.append(exc)

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert breaker.state is CircuitState.CLOSED and len(errors) == 400
    with pytest.raises(InvalidInputError):
        CircuitBreaker(failure_threshold=0)


def test_retry_waits_with_growing_jittered_backoff_only_on_transient_errors() -> None:
    waits = []
    attempts = []

    @retry_with_backoff(max_retries=4, initial_backoff=0.1, backoff_multiplier=2, jitter=0.5,
                        rng=random.Random(1), sleep=waits.append)
    def eventually():
        attempts.append(1)
        if len(attempts) < 4:
            raise StoreUnavailableError("busy")
        return "done"

    assert eventually() == "done" and len(attempts) == 4
    assert len(waits) == 3
    for wait, base in zip(waits, (0.1, 0.2, 0.4)):
        assert base * 0.5 <= wait <= base

    permanent = []

    @retry_with_backoff(max_retries=5, initial_backoff=0, sleep=waits.append)
    def broken():
        permanent.append(1)
        raise StoreError("corrupt")

    with pytest.raises(StoreError):
        broken()
    assert len(permanent) == 1, "a permanent error was retried"


def test_retry_gives_up_after_max_retries_and_never_retries_non_idempotent_calls() -> None:
    calls = []

    @retry_with_backoff(max_retries=3, initial_backoff=0, sleep=lambda s: None)
    def always_down():
        calls.append(1)
        raise StoreUnavailableError("down")

    with pytest.raises(StoreUnavailableError):
        always_down()
    assert len(calls) == 3
    once = []

    @retry_with_backoff(max_retries=3, initial_backoff=0, idempotent=False, sleep=lambda s: None)
    def append_once():
        once.append(1)
        raise StoreUnavailableError("down")

    with pytest.raises(StoreUnavailableError):
        append_once()
    assert len(once) == 1
    deadline_calls = []

    @retry_with_backoff(max_retries=10, initial_backoff=5, deadline=1.0, sleep=lambda s: None)
    def slow():
        deadline_calls.append(1)
        raise StoreUnavailableError("down")

    with pytest.raises(StoreUnavailableError):
        slow()
    assert len(deadline_calls) == 1, "a wait past the deadline was started"
    with pytest.raises(InvalidInputError):
        retry_with_backoff(max_retries=0)


def test_cache_evicts_least_recently_used_and_expires(monkeypatch) -> None:
    cache = ReadThroughCache(capacity=2)
    cache.set("a", 1)
    cache.set("b", 2)
    assert cache.get("a") == 1
    cache.set("c", 3)  # evicts b, the least recently used
    assert cache.get("b") is None and cache.get("a") == 1 and cache.get("c") == 3
    assert (cache.hits, cache.misses, cache.evictions) == (3, 1, 1)
    now = [1000.0]
    monkeypatch.setattr("memsys.resilience.cache.time.monotonic", lambda: now[0])
    timed = ReadThroughCache(capacity=10, ttl=5)
    timed.set("k", "v")
    now[0] += 4
    assert timed.get("k") == "v"
    now[0] += 2
    assert timed.get("k") is None and len(timed) == 0
    timed.set("k", "v")
    timed.invalidate("k")
    assert timed.get("k") is None
    with pytest.raises(InvalidInputError):
        ReadThroughCache(capacity=0)
