"""Timing helper shared by the benchmark scripts (ratios are always taken in one process)."""

import time

import numpy as np


def median_time(fn, reps: int) -> float:
    """Median wall-clock seconds of ``reps`` calls of ``fn()``."""
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts))


def best_cpu_time(fn, reps: int) -> float:
    """Smallest CPU seconds (``time.process_time``) of ``reps`` calls of ``fn()``."""
    ts = []
    for _ in range(reps):
        t0 = time.process_time()
        fn()
        ts.append(time.process_time() - t0)
    return min(ts)
