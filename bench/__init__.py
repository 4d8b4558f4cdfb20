"""Benchmark of the exporter against the API quotas, beside a naive SDK loop: `python -m bench`."""
