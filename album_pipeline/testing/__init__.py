"""Test and demo infrastructure: loopback emulators of the real services and synthetic data writers.

The pipeline's core and its Dagster definitions never import this package; the tests, the benchmarks and
`album-pipeline demo` / `album-pipeline emulators` do.
"""
