"""Edge behaviour of the breaker, retry and cache that mutation testing found unpinned.

Each test checks an observable outcome at a boundary (the exact threshold, the exact timeout,
the default settings, the counters operators read), not how the code is written.
"""

from __future__ import annotations

import pytest

from memsys import CircuitBreaker, CircuitBreakerOpenError, InvalidInputError, StoreUnavailableError
from memsys import retry_with_backoff
from memsys.domain.errors import NotFoundError
from memsys.resilience import cache as cache_module
from memsys.resilience.cache import ReadThroughCache
from memsys.resilience.circuit_breaker import CircuitState


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def down() -> None:
    raise StoreUnavailableError("down")


def trip(breaker: CircuitBreaker, times: int) -> None:
    for _ in range(times):
        with pytest.raises(StoreUnavailableError):
            breaker.execute(down)


# --- circuit breaker ----------------------------------------------------------------------


def test_breaker_settings_are_validated_at_their_boundaries() -> None:
    with pytest.raises(InvalidInputError):
        CircuitBreaker(failure_threshold=0)
    with pytest.raises(InvalidInputError):
        CircuitBreaker(reset_timeout=-0.001)
    edge = CircuitBreaker(failure_threshold=1, reset_timeout=0)
    assert edge.failure_threshold == 1 and edge.reset_timeout == 0
    default = CircuitBreaker()
    assert (default.failure_threshold, default.reset_timeout, default.name) == (3, 60.0, "store")
    assert default.snapshot() == {"state": "CLOSED", "failures": 0, "opened": 0,
                                  "failure_threshold": 3, "reset_timeout": 60.0}


def test_breaker_opens_exactly_at_the_threshold_and_says_when_to_retry() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failure_threshold=3, reset_timeout=10, name="kuzu", clock=clock)
    trip(breaker, 2)
    assert breaker.state is CircuitState.CLOSED and breaker.failure_count == 2
    trip(breaker, 1)
    assert breaker.state is CircuitState.OPEN and breaker.opened == 1
    clock.now += 4
    with pytest.raises(CircuitBreakerOpenError) as rejected:
        breaker.execute(lambda: None)
    assert rejected.value.store == "kuzu"
    assert rejected.value.retry_after == pytest.approx(6.0)
    assert "kuzu" in str(rejected.value) and "3 failures" in str(rejected.value) and "6.0s" in str(rejected.value)
    assert breaker.snapshot() == {"state": "OPEN", "failures": 3, "opened": 1,
                                  "failure_threshold": 3, "reset_timeout": 10}
    assert repr(breaker) == "CircuitBreaker(kuzu, OPEN, failures=3)"


def test_the_probe_is_admitted_exactly_at_the_reset_timeout_and_only_once() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failure_threshold=1, reset_timeout=5, name="chroma", clock=clock)
    trip(breaker, 1)
    clock.now += 4.999
    assert breaker.state is CircuitState.OPEN
    with pytest.raises(CircuitBreakerOpenError):
        breaker.admit()
    clock.now += 0.001
    assert breaker.state is CircuitState.HALF_OPEN
    assert breaker.admit() is True  # the probe
    with pytest.raises(CircuitBreakerOpenError) as second:
        breaker.admit()
    assert second.value.retry_after == 0.0 and second.value.store == "chroma"
    assert "probe is running" in str(second.value)


def test_a_successful_probe_closes_and_the_next_outage_can_be_probed_again() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failure_threshold=2, reset_timeout=5, clock=clock)
    for outage in range(1, 4):
        trip(breaker, 2)
        assert breaker.state is CircuitState.OPEN and breaker.opened == outage
        clock.now += 5
        assert breaker.execute(lambda: "up") == "up"
        assert breaker.state is CircuitState.CLOSED and breaker.failure_count == 0
    assert breaker.admit() is False  # closed: calls are not probes


def test_a_failed_probe_reopens_for_a_full_timeout_from_the_probe() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failure_threshold=1, reset_timeout=5, clock=clock)
    trip(breaker, 1)
    clock.now += 7
    trip(breaker, 1)  # the probe fails
    assert breaker.state is CircuitState.OPEN and breaker.opened == 2
    clock.now += 4.9  # measured from the probe, not from the first opening
    with pytest.raises(CircuitBreakerOpenError) as rejected:
        breaker.execute(lambda: None)
    assert rejected.value.retry_after == pytest.approx(0.1)
    clock.now += 0.1
    assert breaker.execute(lambda: 1) == 1 and breaker.state is CircuitState.CLOSED


def test_a_probe_answered_with_a_caller_error_closes_the_circuit() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failure_threshold=1, reset_timeout=1, clock=clock)
    trip(breaker, 1)
    clock.now += 1

    def missing() -> None:
        raise NotFoundError("no such id")

    with pytest.raises(NotFoundError):
        breaker.execute(missing)
    assert breaker.state is CircuitState.CLOSED and breaker.failure_count == 0
    # a caller error in the closed state neither counts nor resets anything
    trip(breaker, 0)
    with pytest.raises(NotFoundError):
        breaker.execute(missing)
    assert breaker.failure_count == 0 and breaker.state is CircuitState.CLOSED


def test_an_interrupted_probe_lets_the_next_call_probe() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failure_threshold=1, reset_timeout=1, clock=clock)
    trip(breaker, 1)
    clock.now += 1

    def interrupted() -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        breaker.execute(interrupted)
    assert breaker.state is CircuitState.HALF_OPEN and breaker.opened == 1
    assert breaker.execute(lambda: "probe") == "probe" and breaker.state is CircuitState.CLOSED


def test_success_after_failures_restarts_the_consecutive_count() -> None:
    breaker = CircuitBreaker(failure_threshold=2, reset_timeout=5, clock=Clock())
    trip(breaker, 1)
    breaker.record_success()
    assert breaker.failure_count == 0
    trip(breaker, 1)
    assert breaker.state is CircuitState.CLOSED
    breaker.reset()
    assert breaker.snapshot()["failures"] == 0


def test_reset_closes_an_open_circuit_and_forgets_a_running_probe() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failure_threshold=1, reset_timeout=1, clock=clock)
    trip(breaker, 1)
    clock.now += 1
    assert breaker.admit() is True
    breaker.reset()
    assert breaker.state is CircuitState.CLOSED and breaker.failure_count == 0
    trip(breaker, 1)
    clock.now += 1
    assert breaker.admit() is True  # the probe flag was cleared by reset


# --- retry --------------------------------------------------------------------------------


class FixedRandom:
    def __init__(self, value: float) -> None:
        self.value = value

    def random(self) -> float:
        return self.value


def flaky(failures: int, error: type[Exception] = StoreUnavailableError):
    calls = []

    def call() -> str:
        calls.append(1)
        if len(calls) <= failures:
            raise error(f"attempt {len(calls)}")
        return "done"

    return call, calls


@pytest.mark.parametrize("kwargs", [{"max_retries": 0}, {"initial_backoff": -0.1}, {"backoff_multiplier": 0.99},
                                    {"jitter": -0.01}, {"jitter": 1.01}])
def test_retry_settings_out_of_range_are_refused(kwargs) -> None:
    with pytest.raises(InvalidInputError):
        retry_with_backoff(**kwargs)


@pytest.mark.parametrize("kwargs", [{"max_retries": 1}, {"initial_backoff": 0}, {"backoff_multiplier": 1},
                                    {"jitter": 0}, {"jitter": 1}])
def test_retry_settings_at_the_boundary_are_accepted(kwargs) -> None:
    assert callable(retry_with_backoff(**kwargs))


def test_retry_defaults_are_three_attempts_from_one_second_doubling_with_half_jitter() -> None:
    waits: list[float] = []
    call, calls = flaky(5)
    wrapped = retry_with_backoff(rng=FixedRandom(0.5), sleep=waits.append)(call)
    with pytest.raises(StoreUnavailableError, match="attempt 3"):
        wrapped()
    assert len(calls) == 3
    assert waits == [pytest.approx(0.75), pytest.approx(1.5)]  # 1*(1-0.5*0.5), 2*(1-0.5*0.5)


def test_retry_waits_grow_by_the_multiplier_and_are_capped() -> None:
    waits: list[float] = []
    call, calls = flaky(4)
    wrapped = retry_with_backoff(max_retries=5, initial_backoff=1.0, backoff_multiplier=3.0, max_backoff=5.0,
                                 jitter=0.0, sleep=waits.append)(call)
    assert wrapped() == "done" and len(calls) == 5
    assert waits == [1.0, 3.0, 5.0, 5.0]


def test_retry_stops_before_a_wait_that_would_pass_the_deadline() -> None:
    waits: list[float] = []
    call, calls = flaky(3)
    wrapped = retry_with_backoff(max_retries=5, initial_backoff=10.0, jitter=0.0, deadline=5.0,
                                 sleep=waits.append)(call)
    with pytest.raises(StoreUnavailableError, match="attempt 1"):
        wrapped()
    assert waits == [] and len(calls) == 1
    roomy = retry_with_backoff(max_retries=5, initial_backoff=0.01, jitter=0.0, deadline=60.0,
                               sleep=waits.append)(flaky(2)[0])
    assert roomy() == "done" and waits == [0.01, 0.02]


def test_retry_never_repeats_non_transient_or_non_idempotent_calls() -> None:
    call, calls = flaky(1, error=ValueError)
    with pytest.raises(ValueError):
        retry_with_backoff(sleep=lambda s: None)(call)()
    assert len(calls) == 1
    call, calls = flaky(1)
    with pytest.raises(StoreUnavailableError):
        retry_with_backoff(idempotent=False, sleep=lambda s: None)(call)()
    assert len(calls) == 1


def test_retry_keeps_the_wrapped_function_name_and_arguments() -> None:
    @retry_with_backoff(sleep=lambda s: None)
    def read(item_id: str, *, version: int) -> tuple[str, int]:
        return item_id, version

    assert read.__name__ == "read" and read("a", version=2) == ("a", 2)


# --- read-through cache -------------------------------------------------------------------


def test_cache_settings_are_validated_at_their_boundaries() -> None:
    with pytest.raises(InvalidInputError):
        ReadThroughCache(capacity=0)
    with pytest.raises(InvalidInputError):
        ReadThroughCache(ttl=0)
    assert ReadThroughCache(capacity=1, ttl=0.001).capacity == 1
    default = ReadThroughCache()
    assert default.capacity == 4096 and default.ttl is None


def test_cache_counts_hits_misses_and_evicts_the_least_recently_read(monkeypatch) -> None:
    cache = ReadThroughCache(capacity=2)
    assert cache.get("a") is None and cache.misses == 1 and cache.hits == 0
    assert cache.set("a", 1) is True and cache.set("b", 2) is True
    assert cache.get("a") == 1 and cache.hits == 1  # a is now the most recent
    cache.set("c", 3)
    assert cache.evictions == 1 and len(cache) == 2
    assert cache.get("b") is None and cache.get("a") == 1 and cache.get("c") == 3
    cache.set("a", 10)  # overwrite refreshes recency too
    cache.set("d", 4)
    assert cache.get("c") is None and cache.get("a") == 10


def test_cache_entries_live_exactly_ttl_seconds(monkeypatch) -> None:
    now = [500.0]
    monkeypatch.setattr(cache_module.time, "monotonic", lambda: now[0])
    cache = ReadThroughCache(ttl=2.0)
    cache.set("a", "v")
    now[0] += 2.0
    assert cache.get("a") == "v"  # at exactly ttl the entry is still fresh
    now[0] += 0.001
    assert cache.get("a") is None and len(cache) == 0 and cache.misses == 1


def test_a_fill_read_before_an_invalidation_is_refused() -> None:
    cache = ReadThroughCache()
    token = cache.token("a")
    cache.invalidate("a")  # invalidating an uncached key must not raise
    assert cache.set("a", "old", token) is False and cache.stale_fills == 1 and cache.get("a") is None
    assert cache.set("a", "new", cache.token("a")) is True and cache.get("a") == "new"
    # other keys are not affected by a's invalidation
    other = cache.token("b")
    cache.invalidate("a")
    assert cache.set("b", "fine", other) is True


def test_a_get_miss_supplies_the_token_for_the_following_fill() -> None:
    cache = ReadThroughCache()
    assert cache.get("a") is None
    cache.invalidate("a")  # a commit lands between the miss and the fill
    assert cache.set("a", "stale") is False and cache.stale_fills == 1
    assert cache.get("a") is None
    assert cache.set("a", "fresh") is True and cache.get("a") == "fresh"
    # a miss on another key does not lend its token
    assert cache.get("x") is None
    cache.invalidate("y")
    assert cache.set("y", "no miss before it") is True


def test_forgotten_invalidations_still_refuse_older_fills() -> None:
    cache = ReadThroughCache(capacity=2)
    early = cache.token("z")
    for key in ("a", "b", "c"):  # a's invalidation is forgotten (bounded memory)
        cache.invalidate(key)
    assert cache.set("z", "maybe stale", early) is False
    assert cache.set("a", "maybe stale", early) is False
    late = cache.token("z")
    assert cache.set("z", "fresh", late) is True
    # remembered invalidations are judged per key: c (invalidated at generation 3) refuses a
    # token of generation 2, b (invalidated at generation 2) accepts it
    assert cache.set("c", "stale", late - 1) is False
    assert cache.set("b", "fresh", late - 1) is True


def test_clear_empties_the_cache_and_refuses_fills_read_before_it() -> None:
    cache = ReadThroughCache()
    cache.set("a", 1)
    before = cache.token("a")
    cache.clear()
    assert len(cache) == 0 and cache.get("a") is None
    assert cache.set("q", 1, before) is False
    assert cache.set("q", 2, cache.token("q")) is True
