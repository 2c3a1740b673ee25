"""Network faults between the Chroma adapter and a real `chroma run` server, through a real Toxiproxy."""

from __future__ import annotations

import pytest

from memsys import DeadlineExceededError, StoreUnavailableError, TransientError
from memsys.adapters.chroma_store import ChromaDBVectorStore
from memsys.testing import sample_item


@pytest.fixture
def proxied(chroma_server, toxiproxy, tmp_path):
    proxy = toxiproxy.client.create_proxy(f"chroma-{tmp_path.name}", upstream=f"127.0.0.1:{chroma_server.port}")
    store = ChromaDBVectorStore(path=tmp_path / "ns", host=proxy.host, port=proxy.port, dimension=16, timeout=1.5)
    store.store(sample_item(1))
    yield store, proxy
    toxiproxy.client.delete_proxy(proxy.name)
    store.close()


def test_a_stalled_server_hits_the_deadline_and_is_a_transient_error(proxied) -> None:
    store, proxy = proxied
    with proxy.toxic("timeout", timeout=0):  # hold every byte: the server never answers
        with pytest.raises(DeadlineExceededError) as failure:  # the deadline fired (else: a hang, cut by the timeout)
            store.retrieve("item-00001")
    assert failure.value.transient and failure.value.store == "chroma"
    assert store.retrieve("item-00001") == sample_item(1), "the store did not recover after the fault"


def test_a_downed_proxy_is_unavailable_and_writes_fail_without_applying(proxied) -> None:
    store, proxy = proxied
    with proxy.down():
        with pytest.raises(StoreUnavailableError):
            store.store(sample_item(2))
        with pytest.raises(TransientError):
            store.search({})
    assert store.retrieve("item-00002") is None
    store.store(sample_item(2))
    assert store.retrieve("item-00002") == sample_item(2)


def test_latency_below_the_deadline_is_only_slower(proxied) -> None:
    store, proxy = proxied
    with proxy.toxic("latency", latency=200, jitter=20):
        assert store.retrieve("item-00001") == sample_item(1)
        store.store(sample_item(3))
    assert store.retrieve("item-00003") == sample_item(3)


def test_opening_against_a_stalled_server_fails_promptly(chroma_server, toxiproxy, tmp_path) -> None:
    proxy = toxiproxy.client.create_proxy("chroma-stalled-open", upstream=f"127.0.0.1:{chroma_server.port}")
    try:
        with proxy.toxic("timeout", timeout=0), pytest.raises(DeadlineExceededError):
            ChromaDBVectorStore(path=tmp_path / "x", host=proxy.host, port=proxy.port, dimension=16, timeout=1.0)
    finally:
        toxiproxy.client.delete_proxy(proxy.name)
