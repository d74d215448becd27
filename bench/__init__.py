"""Benchmarks: one command each, printing figures (not timed tests; see docs/PERFORMANCE.md)."""
