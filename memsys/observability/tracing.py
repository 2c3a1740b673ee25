"""Spans through the OpenTelemetry API, at no cost until an SDK is configured.

OpenTelemetry's API alone hands out proxy tracers whose no-op spans still cost
several microseconds each through its context machinery; a transaction opens
about ten. ``Tracer`` therefore checks the global tracer provider and uses a
local no-op until a real provider is installed, then the real tracer, so
configuring an SDK at any time starts the spans flowing. Without
opentelemetry-api installed at all, the local no-op is used throughout.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any


class _NoopSpan:
    def set_attribute(self, key: str, value: Any) -> None:
        pass

    def add_event(self, name: str, attributes: dict[str, Any] | None = None) -> None:
        pass

    def record_exception(self, exception: BaseException) -> None:
        pass


_NOOP_SPAN = _NoopSpan()


@contextlib.contextmanager
def _noop_span() -> Iterator[_NoopSpan]:
    yield _NOOP_SPAN


class Tracer:
    def __init__(self, name: str = "memsys") -> None:
        self.name = name
        self._provider: Any = None
        self._tracer: Any = None
        self._checked_until = 0.0
        try:
            from opentelemetry import trace
        except ImportError:
            self._trace = None
        else:
            self._trace = trace

    def _current(self) -> Any:
        trace = self._trace
        if trace is None:
            return None
        now = time.monotonic()
        if now < self._checked_until:
            return self._tracer
        self._checked_until = now + 1.0  # looking the provider up reads the environment: once a second
        provider = trace.get_tracer_provider()
        if provider is not self._provider:
            self._provider = provider
            real = not isinstance(provider, (trace.ProxyTracerProvider, trace.NoOpTracerProvider))
            self._tracer = provider.get_tracer(self.name) if real else None
        return self._tracer

    def start_as_current_span(self, name: str, attributes: dict[str, Any] | None = None) -> Any:
        tracer = self._current()
        if tracer is None:
            return _noop_span()
        return tracer.start_as_current_span(name, attributes=attributes)


def get_tracer(name: str = "memsys") -> Tracer:
    return Tracer(name)
