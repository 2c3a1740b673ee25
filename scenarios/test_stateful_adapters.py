"""The full manager machine (scenarios/machines.py) over each of the seven embedded adapters alone."""

from __future__ import annotations

import pytest

from memsys.testing.crash import BACKENDS
from scenarios import profiles
from scenarios.machines import backend_stores, manager_machine

#: Examples x steps per adapter in CI (the deep profile multiplies them); Chroma's commits are the slowest.
DOSE = {"chroma": (5, 20)}


@pytest.mark.parametrize("backend", BACKENDS)
def test_manager_over_one_adapter_matches_the_model(backend: str) -> None:
    examples, steps = DOSE.get(backend, (10, 25))
    profiles.run(manager_machine(backend_stores(backend), label=backend), examples=examples, steps=steps)
