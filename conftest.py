"""Suite-wide settings: the kit's pytest plugin and deterministic Hypothesis profiles."""

import os

from hypothesis import HealthCheck, settings

pytest_plugins = ["memsys.testing.plugin", "tests.servers"]

# Deterministic everywhere: a failure reproduces from the same commit, and no example database
# is written into the work tree. "ci" also prints the blob that reproduces a failure.
settings.register_profile("dev", derandomize=True, database=None, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("ci", parent=settings.get_profile("dev"), print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))


import pytest  # noqa: E402


@pytest.fixture
def small_disk(tmp_path):
    """A real 8 MiB file system (tmpfs, needs root) that fills up: ``small_disk`` is its folder.
    Where it cannot be mounted the test skips, and CI turns that skip into a failure."""
    from memsys.testing.disk import DiskFaultUnavailable, small_filesystem
    from memsys.testing.plugin import skip_server_unavailable

    try:
        with small_filesystem(tmp_path / "small-disk") as folder:
            yield folder
    except DiskFaultUnavailable as exc:
        skip_server_unavailable(f"cannot mount a small file system: {exc}")


@pytest.fixture
def plfs(tmp_path):
    """A mounted power-loss file system (``memsys.testing.powerloss``, FUSE) per test. Where FUSE
    cannot mount the test skips, and CI turns that skip into a failure."""
    from memsys.testing.plugin import skip_server_unavailable
    from memsys.testing.powerloss import PowerLossFS, PowerLossUnavailable

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
