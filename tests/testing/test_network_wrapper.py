"""The bounded toxiproxy-python wrapper (memsys.testing.network) against a real Toxiproxy server,
and against servers that misbehave: one that never answers, one that answers 500."""

from __future__ import annotations

import http.server
import socket
import threading
from collections.abc import Iterator

import pytest

from memsys.testing.network import (
    TOXICS,
    Fault,
    ToxiproxyAPI,
    ToxiproxyBadRequest,
    ToxiproxyConflict,
    ToxiproxyError,
    ToxiproxyNotFound,
    ToxiproxyUnavailable,
    matrix,
    network_matrix,
    toxic_attributes,
)


@pytest.fixture
def api(toxiproxy, request) -> Iterator[ToxiproxyAPI]:
    client = toxiproxy.api(timeout=5.0)
    yield client
    for proxy in client.proxies().values():
        if proxy.name.startswith("wrapper-"):
            proxy.destroy()
    client.close()


def test_proxies_are_created_listed_taken_down_and_destroyed(api, request) -> None:
    name = f"wrapper-{request.node.name[:40]}"
    proxy = api.create_proxy(name, upstream="127.0.0.1:9")
    assert proxy.port > 0 and proxy.enabled
    assert api.get_proxy(name).listen == proxy.listen and name in api.proxies()
    with proxy.down():
        assert api.get_proxy(name).enabled is False
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((proxy.host, proxy.port), timeout=2).close()
    assert api.get_proxy(name).enabled is True
    assert api.get_proxy(name).listen == proxy.listen, "re-enabling moved the proxy to another port"
    proxy.destroy()
    with pytest.raises(ToxiproxyNotFound) as missing:
        api.get_proxy(name)
    assert missing.value.status == 404 and "proxy not found" in str(missing.value)


def test_every_toxic_and_attribute_in_the_table_is_what_the_server_keeps(api) -> None:
    # The table is what keeps a misspelt attribute from becoming a toxic that does nothing: it
    # must match the server. Every attribute gets a distinct value and must come back as sent.
    proxy = api.create_proxy("wrapper-table", upstream="127.0.0.1:9")
    for n, (toxic, attributes) in enumerate(sorted(TOXICS.items())):
        values = {a: 10 + n * 7 + i for i, a in enumerate(attributes)}
        if toxic == "slicer":
            values["size_variation"] = 1  # must be below average_size
        for stream in ("upstream", "downstream"):
            name = proxy.add_toxic(toxic, stream=stream, toxicity=0.5, **values)
            kept = proxy.toxics()[name]
            assert kept["type"] == toxic and kept["stream"] == stream and kept["toxicity"] == 0.5
            assert {k: kept["attributes"][k] for k in values} == values, toxic
            proxy.remove_toxic(name)
    assert proxy.toxics() == {}


def test_the_matrix_attributes_are_accepted_and_kept_by_the_server(api) -> None:
    proxy = api.create_proxy("wrapper-matrix", upstream="127.0.0.1:9")
    for fault in matrix(quick=False, deadline=0.5):
        if fault.toxic is None:
            continue
        name = proxy.add_toxic(fault.toxic, stream=fault.stream, **dict(fault.attributes))
        assert {k: proxy.toxics()[name]["attributes"][k] for k in dict(fault.attributes)} == dict(fault.attributes)
        proxy.remove_toxic(name)


def test_bad_toxics_are_refused_before_anything_is_sent(api) -> None:
    proxy = api.create_proxy("wrapper-refused", upstream="127.0.0.1:9")
    for kwargs in ({"type": "latency", "latncy": 100},  # Toxiproxy would add a latency toxic of 0 ms
                   {"type": "lag", "latency": 100},
                   {"type": "latency", "stream": "sideways", "latency": 100},
                   {"type": "latency", "toxicity": 1.5, "latency": 100},
                   {"type": "latency", "latency": -1},
                   {"type": "latency", "latency": 1.5}):
        with pytest.raises(ToxiproxyBadRequest):
            proxy.add_toxic(**kwargs)
    assert proxy.toxics() == {}, "a refused toxic reached the server"


def test_error_statuses_raise_typed_errors(api) -> None:
    proxy = api.create_proxy("wrapper-errors", upstream="127.0.0.1:9")
    with pytest.raises(ToxiproxyConflict):
        api.create_proxy("wrapper-errors", upstream="127.0.0.1:9")
    proxy.add_toxic("latency", latency=5)
    with pytest.raises(ToxiproxyConflict) as twice:
        proxy.add_toxic("latency", latency=5)
    assert twice.value.status == 409 and twice.value.method == "POST"
    with pytest.raises(ToxiproxyNotFound):
        proxy.remove_toxic("no-such-toxic")
    # Code written against toxiproxy-python catches its own exception types: still caught.
    from toxiproxy.exceptions import NotFound, ProxyExists

    with pytest.raises(NotFound):
        proxy.remove_toxic("no-such-toxic")
    with pytest.raises(ProxyExists):
        api.create_proxy("wrapper-errors", upstream="127.0.0.1:9")


def test_the_library_address_is_restored_and_two_servers_are_kept_apart(api, tmp_path) -> None:
    from toxiproxy.api import APIConsumer

    from memsys.testing.servers import ToxiproxyServer

    before = APIConsumer.host, APIConsumer.port
    other = ToxiproxyServer(log_dir=str(tmp_path))
    try:
        second = other.api()
        second.create_proxy("wrapper-second", upstream="127.0.0.1:9")
        assert "wrapper-second" in second.proxies()
        assert "wrapper-second" not in api.proxies()
        assert (APIConsumer.host, APIConsumer.port) == before
    finally:
        other.stop()


class _Silent:
    """A port that accepts connections and never answers."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]


def test_a_server_that_never_answers_is_a_bounded_transient_error() -> None:
    silent = _Silent()
    try:
        client = ToxiproxyAPI(f"127.0.0.1:{silent.port}", timeout=0.3)
        with pytest.raises(ToxiproxyUnavailable) as failure:
            client.proxies()  # toxiproxy-python alone would wait forever
        assert failure.value.transient and failure.value.path == "/proxies"
        assert client.running() is False
    finally:
        silent.sock.close()


class _Failing(http.server.BaseHTTPRequestHandler):
    def _fail(self) -> None:
        body = b'{"error":"boom","status":500}'
        self.send_response(500)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_DELETE = _fail

    def log_message(self, *args: object) -> None:
        pass


def test_a_500_answer_is_raised_not_taken_for_success() -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Failing)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        client = ToxiproxyAPI(f"127.0.0.1:{server.server_address[1]}", timeout=2.0)
        with pytest.raises(ToxiproxyUnavailable) as failure:
            client.reset()  # toxiproxy-python returns True for this
        assert failure.value.status == 500 and "boom" in failure.value.body
    finally:
        server.shutdown()
        server.server_close()


def test_addresses_are_checked() -> None:
    for bad in ("nohost", "host:", "host:99999", ":8474", ""):
        with pytest.raises(ToxiproxyBadRequest):
            ToxiproxyAPI(bad)
    assert ToxiproxyAPI("http://127.0.0.1:8474").address == "127.0.0.1:8474"
    with pytest.raises(ToxiproxyError, match="chroma_url"):
        network_matrix("/nonexistent/never-created", 0, chroma_url="not an address")


def test_the_matrix_covers_every_toxic_on_both_streams_the_proxy_down_and_mid_transaction_starts() -> None:
    for quick in (True, False):
        rows = matrix(quick=quick)
        toxics = {(f.toxic, f.stream) for f in rows if f.start == "between" and f.toxic}
        assert toxics == {(t, s) for t in TOXICS if t != "noop" for s in ("upstream", "downstream")}
        assert Fault(None) in rows
        assert {f.start for f in rows} == {"between", "after_prepare", "in_apply"}
        assert len({f.name for f in rows}) == len(rows)
    assert len(matrix(quick=False)) > len(matrix(quick=True))
    # Every toxic is set to break calls against the deadline it is scaled to.
    assert toxic_attributes("latency", 0.5)["latency"] - toxic_attributes("latency", 0.5)["jitter"] > 500


def test_a_chroma_server_that_does_not_answer_skips_the_matrix_with_the_reason(toxiproxy, tmp_path) -> None:
    from memsys.testing.servers import free_port

    port = free_port()  # nothing listens there
    results = network_matrix(str(tmp_path), 0, toxiproxy=toxiproxy.address, chroma_url=f"http://127.0.0.1:{port}")
    assert [r.status for r in results] == ["skipped"]
    assert f"127.0.0.1:{port}" in results[0].detail and "heartbeat" in results[0].detail
