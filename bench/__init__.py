"""Benchmarks of the janitor against the tools users would pick instead, side by side."""
