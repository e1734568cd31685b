"""Gravity SMS benchmarks: ``make bench`` (``python -m bench``) runs them and writes results/latest.md."""
