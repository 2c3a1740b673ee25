"""A mounted power-loss filesystem per test; where FUSE cannot mount, the test skips (a failure in CI)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from memsys.testing.plugin import skip_server_unavailable
from memsys.testing.powerloss import PowerLossFS, PowerLossUnavailable


@pytest.fixture
def plfs(tmp_path) -> Iterator[PowerLossFS]:
    fs = PowerLossFS(tmp_path)
    try:
        fs.mount()
    except PowerLossUnavailable as exc:
        fs.close()
        skip_server_unavailable(f"power-loss filesystem: {exc}")
    try:
        yield fs
    finally:
        fs.close()
