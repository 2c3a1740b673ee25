"""The stateful suite's settings profiles (ci, deep) and replay lines now live in
memsys.testing.profiles (public, used by ``memsys chaos run --deep``); this name stays for the
scenarios tests. MEMSYS_PROFILE, MEMSYS_SEED, MEMSYS_BLOB and MEMSYS_SHRINK work as before."""

from memsys.testing.profiles import *  # noqa: F401,F403
from memsys.testing.profiles import __all__  # noqa: F401
