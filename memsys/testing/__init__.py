"""The conformance kit third parties use to verify their own adapters.

    from memsys.testing import MemoryStoreContract

    class TestMyStore(MemoryStoreContract):
        def create_store(self, path):
            return MyStore(path=path)

Also here: deterministic samples, fault-injecting wrappers, the stateful model
factory, history checkers and the chaos runner. The contracts import pytest;
they are loaded when first used, so the chaos runner works without it.
"""

from __future__ import annotations

from memsys._lazy import lazy_exports

_EXPORTS = {
    "MemoryStoreContract": "memsys.testing.contract",
    "VectorStoreContract": "memsys.testing.contract",
    "GraphStoreContract": "memsys.testing.contract",
    "dump": "memsys.testing.contract",
    "sample_item": "memsys.testing.samples",
    "random_item": "memsys.testing.samples",
    "AWKWARD_IDS": "memsys.testing.samples",
    "run_contract": "memsys.testing.verify",
    "run_verify": "memsys.testing.verify",
    "resolve_target": "memsys.testing.verify",
    "AdapterTarget": "memsys.testing.verify",
    "VerifyReport": "memsys.testing.verify",
    "SECTIONS": "memsys.testing.verify",
    "run_stateful_conformance": "memsys.testing.stateful",
    "StatefulConformanceError": "memsys.testing.stateful",
    "conformance_machine": "memsys.testing.stateful",
    "FaultPlan": "memsys.testing.port_faults",
    "FaultEvent": "memsys.testing.port_faults",
    "InjectedCrash": "memsys.testing.port_faults",
    "wrap_store": "memsys.testing.port_faults",
    "unwrap": "memsys.testing.port_faults",
    "live_plans": "memsys.testing.port_faults",
    "check_all_or_nothing": "memsys.testing.history",
    "check_registers": "memsys.testing.history",
    "check_transactions": "memsys.testing.history",
    "LeakProbe": "memsys.testing.leaks",
    "StoreCycle": "memsys.testing.leaks",
    "LeakError": "memsys.testing.leaks",
}

__all__ = list(_EXPORTS)


__getattr__ = lazy_exports(__name__, _EXPORTS)