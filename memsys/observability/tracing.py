"""Spans through the OpenTelemetry API: a no-op unless an SDK is installed and configured.

Without opentelemetry-api installed at all, the same calls hit a local no-op,
so tracing never becomes a reason for memsys to fail.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any


class _NoopSpan:
    def set_attribute(self, key: str, value: Any) -> None:
        pass

    def add_event(self, name: str, attributes: dict[str, Any] | None = None) -> None:
        pass

    def record_exception(self, exception: BaseException) -> None:
        pass


class _NoopTracer:
    @contextlib.contextmanager
    def start_as_current_span(self, name: str, attributes: dict[str, Any] | None = None) -> Iterator[_NoopSpan]:
        yield _NoopSpan()


def get_tracer(name: str = "memsys") -> Any:
    try:
        from opentelemetry import trace
    except ImportError:
        return _NoopTracer()
    return trace.get_tracer(name)
