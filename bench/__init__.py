"""`make bench`: throughput and latency of the service, each beside a floor
measured in the same run on the same machine (see docs/benchmarks.md)."""
