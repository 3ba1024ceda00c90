"""EndoLink benchmarks (``python -m bench.fanout``): see docs/benchmarks.md."""
