"""The Chroma contract against a Chroma container, where a Docker engine answers.

CI machines have no Docker engine: these tests skip there with the reason, and
the real local-process path (`chroma run`) is what CI exercises instead.
"""

from __future__ import annotations

import pytest

from memsys.adapters.chroma_store import ChromaDBVectorStore
from memsys.testing import VectorStoreContract
from memsys.testing.servers import docker_unavailable_reason

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def chroma_container():
    reason = docker_unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    from testcontainers.core.container import DockerContainer  # pragma: no cover - needs Docker
    from testcontainers.core.waiting_utils import wait_for_logs  # pragma: no cover

    container = DockerContainer("chromadb/chroma:1.5.9").with_exposed_ports(8000)  # pragma: no cover
    try:  # pragma: no cover
        container.start()
        wait_for_logs(container, "Listening on", timeout=60)
    except Exception as exc:  # pragma: no cover - no image without a registry
        pytest.skip(f"cannot start the chromadb/chroma container: {exc}")
    yield container.get_container_host_ip(), int(container.get_exposed_port(8000))  # pragma: no cover
    container.stop()  # pragma: no cover


class TestChromaContainerContract(VectorStoreContract):
    @pytest.fixture(autouse=True)
    def _container(self, chroma_container):
        self.host, self.port = chroma_container  # pragma: no cover

    def create_store(self, path):  # pragma: no cover - needs Docker
        return ChromaDBVectorStore(path=path, host=self.host, port=self.port, dimension=32)
