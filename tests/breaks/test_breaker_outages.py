"""A circuit breaker lives through more than one outage: after a probe closed it, the next
outage opens it again and, once the reset timeout passes, it is probed again and closes."""

from __future__ import annotations

import pytest

from memsys import CircuitBreaker, CircuitBreakerOpenError, StoreUnavailableError
from memsys.resilience.circuit_breaker import CircuitState


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def down() -> None:
    raise StoreUnavailableError("the store is down")


def outage(breaker: CircuitBreaker, clock: Clock, failures: int) -> None:
    """The store fails until the circuit opens; then time passes until a probe is due."""
    for _ in range(failures):
        with pytest.raises(StoreUnavailableError):
            breaker.execute(down)
    assert breaker.state is CircuitState.OPEN
    with pytest.raises(CircuitBreakerOpenError):
        breaker.execute(lambda: "not called")
    clock.now += breaker.reset_timeout


@pytest.mark.parametrize("outages", [2, 3])
def test_every_outage_ends_with_a_probe_that_closes_the_circuit(outages) -> None:
    clock = Clock()
    breaker = CircuitBreaker(failure_threshold=2, reset_timeout=5, name="lmdb", clock=clock)
    for n in range(outages):
        outage(breaker, clock, failures=2)
        assert breaker.state is CircuitState.HALF_OPEN
        assert breaker.execute(lambda: "back") == "back", f"outage {n + 1}: the probe was refused"
        assert breaker.state is CircuitState.CLOSED
        assert breaker.execute(lambda: "again") == "again"
    assert breaker.opened == outages


def test_a_failed_probe_reopens_and_the_next_probe_still_gets_through() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failure_threshold=1, reset_timeout=5, clock=clock)
    outage(breaker, clock, failures=1)
    with pytest.raises(StoreUnavailableError):
        breaker.execute(down)  # the probe fails: open again, for a whole timeout
    assert breaker.state is CircuitState.OPEN
    clock.now += 5
    assert breaker.execute(lambda: "back") == "back" and breaker.state is CircuitState.CLOSED
    outage(breaker, clock, failures=1)  # and the next outage is probed too
    assert breaker.execute(lambda: "back") == "back" and breaker.state is CircuitState.CLOSED
