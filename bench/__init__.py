"""Benchmarks: each script prints a human table and, with --json, one JSON object as its last line."""
