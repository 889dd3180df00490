"""Throwaway Docker engines for the demo, the tests and the benchmarks.

Not part of the janitor: no module that sweeps imports this package (an import-linter
contract keeps it so), which is why it may use the Docker SDK directly.
"""
