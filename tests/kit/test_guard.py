"""A subclass cannot switch a contract check off quietly."""

from __future__ import annotations

import pytest

from memsys.adapters.memory_store import InMemoryStore
from memsys.testing import MemoryStoreContract, VectorStoreContract


class _QuietOverride(MemoryStoreContract):
    def create_store(self, path):
        return InMemoryStore(path=path)

    def test_round_trip_keeps_every_field(self, store):  # the kind of override the guard exists for
        pass

    test_delete_reports_whether_the_item_existed = None


class _DeclaredOverride(VectorStoreContract):
    def create_store(self, path):
        return InMemoryStore(path=path)

    @pytest.mark.xfail(reason="engine rounds embeddings to float16", strict=True)
    def test_vector_round_trip(self, store):
        raise AssertionError


def test_quiet_overrides_fail_the_guard() -> None:
    with pytest.raises(AssertionError) as failure:
        _QuietOverride().test_contract_is_not_silently_overridden()
    message = str(failure.value)
    assert "_QuietOverride.test_round_trip_keeps_every_field" in message
    assert "_QuietOverride.test_delete_reports_whether_the_item_existed" in message


def test_overrides_marked_xfail_with_a_reason_pass_the_guard() -> None:
    _DeclaredOverride().test_contract_is_not_silently_overridden()


def test_overriding_the_guard_itself_is_refused_at_class_creation() -> None:
    with pytest.raises(TypeError, match="overrides the contract guard"):
        class _Sneaky(MemoryStoreContract):
            def test_contract_is_not_silently_overridden(self):
                pass
