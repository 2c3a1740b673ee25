"""Session fixtures that start the real servers the suite needs.

Tests that use them are marked ``server`` automatically, so a run where a
server cannot start fails under CI instead of skipping.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from memsys.testing.plugin import skip_server_unavailable
from memsys.testing.servers import ChromaServer, ServerUnavailable, ToxiproxyServer

SERVER_FIXTURES = {"chroma_server", "toxiproxy", "small_disk", "plfs"}


def pytest_collection_modifyitems(items: list) -> None:
    for item in items:
        if SERVER_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.server)


@pytest.fixture(scope="session")
def chroma_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChromaServer]:
    try:
        server = ChromaServer(str(tmp_path_factory.mktemp("chroma-server") / "data"))
    except ServerUnavailable as exc:
        skip_server_unavailable(f"cannot start chroma run: {exc}")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def toxiproxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ToxiproxyServer]:
    try:
        server = ToxiproxyServer(log_dir=str(tmp_path_factory.mktemp("toxiproxy")))
    except ServerUnavailable as exc:
        skip_server_unavailable(f"cannot start the Toxiproxy server: {exc}")
    yield server
    server.stop()
