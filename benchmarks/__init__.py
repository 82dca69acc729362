"""Benchmarks: each prints its figures, the CPU and the ratio to a baseline run in the same run.
Run them as modules from the repository root: ``python -m benchmarks.layout``."""
