from __future__ import annotations

from datetime import timedelta

import pytest

from memsys import InvalidQueryError, MemoryType
from memsys.adapters.duckdb_store import DuckDBMemoryAdapter
from memsys.testing import MemoryStoreContract, sample_item
from memsys.testing.samples import EPOCH


class TestDuckDBContract(MemoryStoreContract):
    def create_store(self, path):
        return DuckDBMemoryAdapter(path=path)


class TestDuckDBNoSyncContract(MemoryStoreContract):
    def create_store(self, path):
        return DuckDBMemoryAdapter(path=path, sync=False)


@pytest.fixture
def duck(tmp_path):
    store = DuckDBMemoryAdapter(path=tmp_path / "items.duckdb")
    store.store_many([sample_item(i) for i in range(30)])
    yield store
    store.close()


def test_structured_filters_push_down_and_agree(duck) -> None:
    hits = duck.search({"memory_type": ["CODE", MemoryType.SHORT_TERM], "metadata": {"parity": "even"},
                        "created_after": EPOCH, "created_before": EPOCH + timedelta(days=1)})
    assert hits and all(h.metadata["parity"] == "even" for h in hits)
    assert {h.memory_type for h in hits} <= {MemoryType.CODE, MemoryType.SHORT_TERM}
    assert duck.search({"metadata": {"parity": "even"}, "limit": 2}) == [sample_item(0), sample_item(2)]


def test_read_only_sql_over_items(duck) -> None:
    rows = duck.query_sql("SELECT memory_type, count(*) AS n FROM memory_items GROUP BY memory_type "
                          "ORDER BY n DESC, memory_type LIMIT 2")
    assert rows[0]["n"] >= rows[1]["n"] and set(rows[0]) == {"memory_type", "n"}
    assert duck.query_sql("SELECT id FROM memory_items WHERE json_extract(metadata, '$.n')::INT = ?", [3]) == \
        [{"id": "item-00003"}]


@pytest.mark.parametrize("sql", [
    "DELETE FROM memory_items", "DROP TABLE memory_items", "INSERT INTO memory_items SELECT * FROM memory_items",
    "SELECT 1; DELETE FROM memory_items", "UPDATE memory_items SET version = 0", "COPY memory_items TO 'x.csv'",
    "SELECT * FROM no_such_table", "SELEC oops", "SELECT * FROM read_csv('/etc/passwd')", "",
])
def test_sql_that_writes_or_is_malformed_is_refused_and_changes_nothing(duck, sql) -> None:
    with pytest.raises(InvalidQueryError):
        duck.query_sql(sql)
    assert duck.count() == 30
