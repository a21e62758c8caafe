"""The `anode-lab` command line: one entry point for the library, the service and the benchmarks."""
