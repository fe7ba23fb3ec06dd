"""Timing a jitted function: compile time apart from steady-state run time."""

from __future__ import annotations

import statistics
import time
from typing import Any, Callable


def compile_timed(fn: Callable, *args: Any):
    """``jax.jit(fn).lower(*args).compile()``; return ``(compiled, seconds)``."""
    import jax

    start = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    return compiled, time.perf_counter() - start


def run_timed(compiled: Callable, *args: Any, repeats: int = 1):
    """Call ``compiled`` ``repeats`` times, each to ``block_until_ready``.

    Returns ``(last output, median seconds, all seconds)``.
    """
    import jax

    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = jax.block_until_ready(compiled(*args))
        times.append(time.perf_counter() - start)
    return out, statistics.median(times), times
