"""Benchmark scripts; `nox -s bench` runs every bench_*.py module here."""
