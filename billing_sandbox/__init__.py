"""A sandbox of the vendor APIs: real HTTP servers on loopback with deterministic datasets.

Each API is played as its documents describe, quirks and faults included, so that the taps, their
tests, the demo and the benchmarks never need a real vendor host or customer credentials.
"""
