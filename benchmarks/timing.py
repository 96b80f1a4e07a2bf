"""Timing helper shared by the benchmark scripts (run as `python benchmarks/NAME.py`, so this imports as `timing`)."""

import time


def best_of(function, repeats: int = 3) -> float:
    """The fastest of ``repeats`` calls, in seconds (the least disturbed by other load on the machine)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)
