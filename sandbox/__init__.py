"""The development wing: throwaway Docker engines, Redis and Celery processes, the test image,
the demo's workload and the demo itself, for the tests, the benchmarks and `make demo`.

Never shipped: the wheel and the image hold `janitor/` alone, and no module of `janitor`
imports this package (an import-linter contract keeps it so), which is why it may use the
Docker SDK directly. Its child processes run on the janitor's own lifecycle helper,
`janitor.children`.
"""
