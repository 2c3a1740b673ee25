"""Spans through the OpenTelemetry API, at no cost until an SDK is configured.

OpenTelemetry's API alone hands out proxy tracers whose no-op spans still cost
several microseconds each through its context machinery; a transaction opens
about ten. ``Tracer`` therefore checks the global tracer provider and uses a
local no-op until a real provider is installed, then the real tracer, so
configuring an SDK at any time starts the spans flowing. Without
opentelemetry-api installed at all, the local no-op is used throughout.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any


class _NoopSpan:
    def set_attribute(self, key: str, value: Any) -> None:
        pass

    def add_event(self, name: str, attributes: dict[str, Any] | None = None) -> None:
        pass

    def record_exception(self, exception: BaseException) -> None:
        pass

    # Its own context manager: a generator-based one costs a microsecond or two per span.
    def __enter__(self) -> _NoopSpan:
        return self

    def __exit__(self, *exc_info: object) -> bool:
        return False


_NOOP_SPAN = _NoopSpan()


def _noop_span() -> _NoopSpan:
    return _NOOP_SPAN


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

    @property
    def active(self) -> bool:
        """True when an SDK is configured (spans are recorded)."""
        return self._current() is not None

    def start_as_current_span(self, name: str, attributes: dict[str, Any] | None = None, *,
                              parent: Any = None, links: Sequence[Any] = ()) -> Any:
        """A span, child of the current one or of ``parent`` (a context from ``context()``, taken
        on another thread), linked to the spans of the contexts in ``links``."""
        tracer = self._current()
        if tracer is None:
            return _noop_span()
        if parent is None and not links:
            return tracer.start_as_current_span(name, attributes=attributes)
        span_links = []
        for ctx in links:
            span_context = self._trace.get_current_span(ctx).get_span_context()
            if span_context.is_valid:
                span_links.append(self._trace.Link(span_context))
        return tracer.start_as_current_span(name, context=parent, links=span_links, attributes=attributes)

    def context(self) -> Any:
        """The current trace context, to parent spans opened on another thread; None without an SDK."""
        if self._current() is None:
            return None
        from opentelemetry import context

        return context.get_current()


def get_tracer(name: str = "memsys") -> Tracer:
    return Tracer(name)
