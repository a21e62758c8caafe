"""Instruments: pure functions over the core, shared by the worker, the CLI, the benchmarks and the tests."""
