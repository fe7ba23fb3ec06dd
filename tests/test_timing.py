"""`purejaxppo.timing`: the compile timed alone, each call timed to its end,
the median reported (no assertion on how fast anything is)."""

import time

import jax.numpy as jnp
import pytest

from timing import compile_timed, run_timed


class _SlowOutput:
    """An output whose computation ends 0.05 s after the call returns."""

    def __init__(self):
        self.ready_at = time.perf_counter() + 0.05

    def block_until_ready(self):
        time.sleep(max(0.0, self.ready_at - time.perf_counter()))
        return self


def test_run_timed_waits_for_each_output_and_reports_the_median():
    out, median, times = run_timed(lambda: _SlowOutput(), repeats=3)
    assert isinstance(out, _SlowOutput) and len(times) == 3
    assert min(times) >= 0.05  # dispatch alone returns at once
    delays = iter([0.0, 0.0, 0.3])

    def uneven():
        time.sleep(next(delays))
        return jnp.zeros(())

    _, median, times = run_timed(uneven, repeats=3)
    assert median == sorted(times)[1] and median < 0.15 < max(times)  # not the mean


def test_compile_timed_times_the_compile_and_returns_the_compiled_function(monkeypatch):
    import jax._src.stages as stages

    real_compile = stages.Lowered.compile

    def slow_compile(self, *args, **kwargs):
        time.sleep(0.2)
        return real_compile(self, *args, **kwargs)

    monkeypatch.setattr(stages.Lowered, "compile", slow_compile)
    compiled, seconds = compile_timed(lambda x: x * 2.0, jnp.ones(3))
    assert seconds >= 0.2
    assert float(compiled(jnp.ones(3))[0]) == pytest.approx(2.0)
