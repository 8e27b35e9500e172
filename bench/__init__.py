"""Benchmarks of the whole Postroom stack (not part of the test suite)."""
