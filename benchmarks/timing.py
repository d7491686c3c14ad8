"""Timing helper shared by the benchmark scripts (ratios are always taken in one process)."""

import time

import numpy as np


def call_times(fn, reps: int, clock=time.perf_counter) -> list[float]:
    """Seconds on ``clock`` of each of ``reps`` calls of ``fn()``."""
    ts = []
    for _ in range(reps):
        t0 = clock()
        fn()
        ts.append(clock() - t0)
    return ts


def median_time(fn, reps: int) -> float:
    """Median wall-clock seconds of ``reps`` calls of ``fn()``."""
    return float(np.median(call_times(fn, reps)))


def best_cpu_time(fn, reps: int) -> float:
    """Smallest CPU seconds (``time.process_time``) of ``reps`` calls of ``fn()``."""
    return min(call_times(fn, reps, time.process_time))
