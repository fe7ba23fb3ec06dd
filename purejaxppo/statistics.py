"""Statistics of final returns over seeds: the interquartile mean (IQM) and
its percentile-bootstrap confidence interval (Agarwal et al. 2021, "Deep
Reinforcement Learning at the Edge of the Statistical Precipice", recommend
the IQM with bootstrap CIs over the mean or median of few runs)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0
CONFIDENCE = 0.95


def iqm(values: Any, axis: int = -1) -> np.ndarray:
    """Interquartile mean: the mean of the middle 50% of ``values`` along ``axis``.

    The sorted values are read as n unit-width intervals on [0, n); the IQM
    is the mean over the middle half [n/4, 3n/4], so a value that straddles a
    boundary counts with the fraction of it inside. For n divisible by 4 this
    drops exactly the lowest and highest n/4 values. For other n it differs
    from ``scipy.stats.trim_mean(x, 0.25)`` (and rliable's IQM), which drops
    floor(n/4) values from each end with no fractional weights. E.g. n = 5,
    sorted x0..x4: (0.75 x1 + x2 + 0.75 x3) / 2.5.

    NaN propagates (drop NaN before calling). n = 0 gives NaN.
    """
    x = np.sort(np.asarray(values, dtype=np.float64), axis=axis)
    n = x.shape[axis]
    if n == 0:
        return np.full(np.delete(x.shape, axis % x.ndim), np.nan)
    left = np.arange(n, dtype=np.float64)
    lo, hi = n / 4.0, 3.0 * n / 4.0
    weights = np.clip(np.minimum(left + 1.0, hi) - np.maximum(left, lo), 0.0, 1.0)
    return np.tensordot(np.moveaxis(x, axis, -1), weights, axes=([-1], [0])) / (n / 2.0)


def bootstrap_ci(values: Any, statistic=iqm, resamples: int = BOOTSTRAP_RESAMPLES,
                 confidence: float = CONFIDENCE, seed: int = BOOTSTRAP_SEED) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of ``statistic`` over a 1-D sample.

    Draws ``resamples`` resamples of the values with replacement
    (``numpy.random.default_rng(seed)``), applies ``statistic(batch, axis=-1)``
    to all of them at once, and returns the (1 - confidence)/2 and
    (1 + confidence)/2 quantiles. NaN bounds for an empty sample.
    """
    x = np.asarray(values, dtype=np.float64).ravel()
    if x.size == 0:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    samples = x[rng.integers(0, x.size, size=(resamples, x.size))]
    stats = statistic(samples, axis=-1)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(stats, [tail, 1.0 - tail])
    return float(low), float(high)


def summarize_final_returns(final_returns: Any) -> dict:
    """Mean, median, IQM and the IQM's bootstrap CI over the finite per-seed values.

    A seed with no episode finished in its final window has a NaN final
    return; it is left out of the statistics and counted in ``nan_seeds``.
    """
    x = np.asarray(final_returns, dtype=np.float64)
    finite = x[np.isfinite(x)]
    nan = math.nan
    low, high = bootstrap_ci(finite)
    return {
        "mean": float(np.mean(finite)) if finite.size else nan,
        "median": float(np.median(finite)) if finite.size else nan,
        "iqm": float(iqm(finite)),
        "iqm_ci95": [low, high],
        "nan_seeds": int(x.size - finite.size),
    }
