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
