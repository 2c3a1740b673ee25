"""Resilience: circuit breakers, retries, read-through caching, degraded-mode writes."""
