"""Transactions through power failures: the stateful model on a power-loss filesystem.

One FUSE mount (memsys.testing.powerloss) serves every example of a test; each example keeps
its stores in its own folder on it. Besides the transaction machine's rules (commit, roll
back, simulated crash at each protocol step), the power fails between transactions and part
way through a commit at each protocol step: what was never fsynced is gone, the stores reopen
on the remounted filesystem and recovery runs. Acknowledged transactions must all be there, on
every store they wrote; a commit cut before its decision was durable must leave no trace.
The adapters run with sync=False, as under a coordinator log: the log alone makes commits
durable. Where FUSE cannot mount the test skips (under CI, fails).
"""

from __future__ import annotations

import pytest

from memsys.testing.powerloss import PowerLossFS
from scenarios import profiles
from scenarios.machines import backend_stores, power_loss_machine

MIXES = {("lmdb", "tinydb"): (5, 15), ("duckdb", "networkx"): (3, 12)}


@pytest.mark.parametrize("backends", list(MIXES), ids=["+".join(m) for m in MIXES])
def test_transactions_survive_power_failures(plfs: PowerLossFS, backends: tuple[str, ...]) -> None:
    examples, steps = MIXES[backends]
    machine = power_loss_machine(backend_stores(*backends), plfs.mount_point, plfs.power_failure,
                                 label="+".join(backends))
    profiles.run(machine, examples=examples, steps=steps)
    assert plfs.power_failures > 0, "no power failure happened: the dose is too small to test anything"
