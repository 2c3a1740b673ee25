"""Tracing spans and metrics for transactions and stores."""
