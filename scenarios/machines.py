"""The manager and power-loss state machines now live in memsys.testing.manager_machine (public,
shipped with the kit, run by ``memsys chaos run --deep``); this name stays for the scenarios tests."""

from memsys.testing.manager_machine import *  # noqa: F401,F403
from memsys.testing.manager_machine import (  # noqa: F401 - the helpers tests reach for by name
    ENGINE_CALLS,
    RESET,
    THRESHOLD,
    TYPES,
    Boom,
    Clock,
    content,
)
from memsys.testing.manager_machine import __all__  # noqa: F401
