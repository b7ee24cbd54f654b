"""The benchmark harness of the three taps (issue 7): ``python -m bench`` or ``make bench``.

- ``bench.runner``: runs each variant as its own process against pre-built sandbox pages and
  measures wall time, RECORD lines, peak RSS and requests;
- ``bench.bare_loop``: the bare-loop baseline (requests + json);
- ``bench.sdk_default``: the tap with singer-sdk's default writer and type conformance forced;
- ``bench.datasets``: datasets, tap configs and the expected records/minimum requests per size;
- ``bench.report``: benchmarks.json / .md / .png;
- ``bench.profile``: where a tap spends its time per record (py-spy, else cProfile).

This module imports nothing: ``python -m bench.bare_loop`` must start as fast as a small script.
"""
