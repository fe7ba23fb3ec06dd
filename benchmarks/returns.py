"""Returns benchmark: train each preset at its budget over several seeds and score it.

    python benchmarks/returns.py                                  # every preset
    python benchmarks/returns.py --presets CartPole-v1 Pendulum-v1 --seeds 16
    python benchmarks/returns.py --presets Breakout-MinAtar+cnn
    python benchmarks/returns.py --quick --presets CartPole-v1    # a smoke run
    python benchmarks/returns.py --table-only                     # rewrite md/PNGs from the JSON

Needs rliable (``pip install -e ".[bench]"``), which computes the statistics.

``--presets`` takes keys of `purejaxppo.presets.PRESETS` (one tuned config
per env) or of ``presets.BASELINES`` (labelled reference configs, where the
module has them); the default is every key of ``PRESETS``. Each preset runs
in its own subprocess, so a crash or a memory blow-up loses that preset
only, and its memory is freed before the next. Per preset:

* all seeds train in ONE compiled call, ``jax.vmap(make_train(config))`` over
  ``jax.random.split(PRNGKey(0), seeds)``; compile (lower + compile) is timed
  apart from the single run of the compiled function (the budgets are too
  large to repeat);
* the final return of a seed is the mean ``episode_return`` over its last 10
  updates (`purejaxppo.evaluation.final_return`); the table gives their mean,
  median and interquartile mean (IQM: rliable's ``metrics.aggregate_iqm``,
  the 25% trimmed mean, so the plain mean for fewer than 4 seeds) with
  rliable's stratified-bootstrap 95% CI (``library.get_interval_estimates``,
  one task, the seeds as runs; percentile method, BOOTSTRAP_RESAMPLES
  resamples, NumPy's global RNG seeded with BOOTSTRAP_SEED for each CI, so
  the table is reproducible), and the preset's target is met when the IQM
  reaches it;
* each seed's final policy also plays ``--eval-episodes`` greedy episodes
  (`purejaxppo.evaluation.make_evaluate`);
* the learning curve is the median and the 25th/75th percentiles over seeds
  of ``episode_return`` after every update, against env steps.

The statistics of every row are recomputed from its ``final_returns``
whenever the files are written. Aggregates over the MinAtar games
(`aggregates`): the IQM of the scores normalised by MINATAR_REFERENCE, over
all seeds of all games, with rliable's stratified-bootstrap CI (seeds
resampled within each game); the probability that a preset's run beats a
``<env>+BASELINE_LABEL`` run of the same game (rliable's
``metrics.probability_of_improvement``, averaged over the games, with its
stratified-bootstrap CI); and a performance profile of the normalised scores.

Writes, under ``benchmarks/results/`` (or ``--out-dir``), with ``<device>``
named as in ``throughput.py`` (e.g. ``cpu``):

* ``returns-<device>.json``: one row per preset under ``rows``, and the
  aggregates under ``aggregates``. An existing file is MERGED: rows of
  presets not rerun are kept, rerun ones replaced, so the full table can be
  built over several invocations (some envs take 30+ minutes);
* ``returns-<device>.md``: the table, from all rows of the JSON, then the
  aggregates;
* ``returns-<device>-<env>.png`` per env (the preset's curve, and any
  BASELINES rows of the same env on the same axes), ``returns-<device>.png``
  (all envs in one grid) and ``returns-<device>-minatar-profile.png`` (the
  MinAtar performance profile).

``--quick`` is a smoke mode: at most 4 envs x 128 steps, 2 updates, 2 seeds;
its files get a ``-quick`` suffix and never mix with the real ones.
``--table-only`` trains nothing: it rewrites the JSON's statistics, the md
and the PNGs of this device's (``--quick``: the smoke run's) JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib.util
import json
import math
import os
import re
import shlex
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Mapping

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # timing.py beside this script

BENCH_EXTRA_HINT = 'pip install -e ".[bench]"'
if importlib.util.find_spec("rliable") is None:  # before anything runs (rliable is imported where used)
    raise SystemExit(f"benchmarks/returns.py needs rliable, which is not installed: {BENCH_EXTRA_HINT}")

RESULTS = Path(__file__).resolve().parent / "results"

FINAL_WINDOW = 10  # updates averaged by `final_return` (its default)
CURVE_DIGITS = 5  # significant digits of the stored learning curves
TRAIN_SEED = 0  # jax.random.PRNGKey(TRAIN_SEED), split over the seeds
EVAL_SEED = 1  # jax.random.PRNGKey(EVAL_SEED), split over the seeds

# --quick: tiny sizes of the preset's own config.
QUICK_MAX_ENVS = 4
QUICK_MAX_STEPS = 128
QUICK_UPDATES = 2
QUICK_SEEDS = 2


def learning_curve(episode_return: Any, batch_size: int) -> dict:
    """Per update: env steps and the 25/50/75th percentiles of the return over seeds.

    ``episode_return`` has shape (seeds, num_updates). NaN (no episode
    finished yet) is ignored; an update where every seed is NaN gives NaN.
    """
    r = np.asarray(episode_return, dtype=np.float64)
    with warnings.catch_warnings():  # all-NaN columns before the first episode ends
        warnings.simplefilter("ignore", category=RuntimeWarning)
        p25, median, p75 = np.nanpercentile(r, [25, 50, 75], axis=0)
    rounded = lambda a: [float(f"{v:.{CURVE_DIGITS}g}") for v in a]  # keeps the JSON small
    return {
        "env_steps": [(u + 1) * batch_size for u in range(r.shape[1])],
        "median": rounded(median),
        "p25": rounded(p25),
        "p75": rounded(p75),
    }


def json_safe(obj: Any) -> Any:
    """``obj`` as plain JSON: non-finite floats -> None, tuples -> lists, numpy -> Python."""
    if isinstance(obj, Mapping):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return json_safe(obj.tolist())
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if obj is None or isinstance(obj, str):
        return obj
    return repr(obj)


def _num(value: Any) -> float:
    """A JSON number back to float (None -> NaN)."""
    return math.nan if value is None else float(value)


# --------------------------------------------------------------- statistics
# All by rliable (Agarwal et al. 2021, "Deep Reinforcement Learning at the Edge
# of the Statistical Precipice"). rliable's bootstrap draws from NumPy's global
# RNG whatever random_state it is given, so each estimate seeds that RNG with
# BOOTSTRAP_SEED (and restores its state after): every CI is reproducible and
# independent of which other rows the table holds.
CONFIDENCE = 0.95
BOOTSTRAP_RESAMPLES = 10_000  # per CI: each row's IQM, each aggregate
PROFILE_RESAMPLES = 2_000  # the performance profile's bands (rliable's default there)
BOOTSTRAP_SEED = 0

# MinAtar games aggregated in `aggregates`; Seaquest only where its rows are present.
MINATAR_GAMES = ("Breakout-MinAtar", "SpaceInvaders-MinAtar", "Asterix-MinAtar", "Freeway-MinAtar")
MINATAR_OPTIONAL_GAMES = ("Seaquest-MinAtar",)
# Reference scores that normalise MinAtar returns (score / reference): the best
# published PPO final return at 1e7 env steps in gymnax-blines
# (RobertTLange/gymnax-blines, docs/lcurves.png: PPO with lr 5e-4, 1e-3 and 1e-4,
# agents/<env>/ppo.yaml, 1e7 steps; the best of the three, read off the plot:
# Breakout and Asterix with lr 1e-3, SpaceInvaders and Freeway with lr 5e-4).
# Seaquest has no PPO figure there (no curve, no checkpoint), so it is left out
# of the normalised aggregate and the profile.
MINATAR_REFERENCE: Mapping[str, float] = {
    "Breakout-MinAtar": 43.0,
    "SpaceInvaders-MinAtar": 131.0,
    "Asterix-MinAtar": 18.0,
    "Freeway-MinAtar": 58.0,
}
# The rows the presets are compared with: ``<env>+BASELINE_LABEL`` (presets.BASELINES).
BASELINE_LABEL = "purejaxrl"
PRESETS_SET = "presets"


def _rliable():
    """rliable's ``library`` and ``metrics`` modules, or one clear line and exit."""
    try:
        from rliable import library, metrics
    except Exception as err:  # not installed, or its dependencies do not import together
        raise SystemExit(f"benchmarks/returns.py needs rliable, which does not import "
                         f"({type(err).__name__}: {err}): {BENCH_EXTRA_HINT}") from err
    return library, metrics


@contextlib.contextmanager
def _numpy_seeded(seed: int):
    """NumPy's global RNG seeded with ``seed`` inside, its previous state restored after."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def interval_estimate(scores: Any, statistic, resamples: int = BOOTSTRAP_RESAMPLES,
                      seed: int = BOOTSTRAP_SEED) -> tuple[float, tuple[float, float]]:
    """``statistic`` of ``scores`` and its stratified-bootstrap CI, by
    ``rliable.library.get_interval_estimates`` (percentile method, CONFIDENCE).

    ``scores``: an array (runs, tasks), runs resampled within each task; or a
    tuple of such arrays, each resampled on its own (rliable's
    StratifiedIndependentBootstrap), passed to ``statistic`` as separate
    arguments. ``statistic`` returns a scalar.
    """
    library, _ = _rliable()
    func = lambda *arrays: np.array([statistic(*arrays)], dtype=np.float64)
    data = list(scores) if isinstance(scores, tuple) else scores
    with _numpy_seeded(seed):
        point, interval = library.get_interval_estimates(
            {"x": data}, func, reps=resamples, confidence_interval_size=CONFIDENCE)
    low, high = np.asarray(interval["x"], dtype=np.float64).reshape(2)
    return float(np.asarray(point["x"]).reshape(())), (float(low), float(high))


def iqm(values: Any) -> float:
    """rliable's IQM (``metrics.aggregate_iqm``: the 25% trimmed mean) of ``values``; NaN if empty."""
    _, metrics = _rliable()
    x = np.asarray(values, dtype=np.float64).ravel()
    return float(metrics.aggregate_iqm(x)) if x.size else math.nan


def iqm_ci95(values: Any, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED) -> dict:
    """The IQM of a 1-D sample (one task, its values the runs) and its
    stratified-bootstrap CI: ``{"iqm": float, "ci95": (low, high)}``, NaN if empty."""
    _, metrics = _rliable()
    x = np.asarray(values, dtype=np.float64).ravel()
    if x.size == 0:
        return {"iqm": math.nan, "ci95": (math.nan, math.nan)}
    point, ci = interval_estimate(x[:, None], metrics.aggregate_iqm, resamples, seed)
    return {"iqm": point, "ci95": ci}


def summarize_final_returns(final_returns: Any, resamples: int = BOOTSTRAP_RESAMPLES) -> dict:
    """Mean, median, IQM and the IQM's CI over the finite per-seed values.

    A seed with no episode finished in its final window has a NaN final
    return (None in the JSON); it is left out and counted in ``nan_seeds``.
    """
    x = np.array([_num(v) for v in np.asarray(final_returns, dtype=object).ravel()], dtype=np.float64)
    finite = x[np.isfinite(x)]
    estimate = iqm_ci95(finite, resamples)
    return {
        "mean": float(np.mean(finite)) if finite.size else math.nan,
        "median": float(np.median(finite)) if finite.size else math.nan,
        "iqm": estimate["iqm"],
        "iqm_ci95": list(estimate["ci95"]),
        "nan_seeds": int(x.size - finite.size),
    }


def row_statistics(row: Mapping[str, Any], resamples: int = BOOTSTRAP_RESAMPLES) -> dict:
    """A row's statistic keys (``final_return_mean``, ``_median``, ``_iqm``,
    ``_iqm_ci95``, ``_nan_seeds``, ``target_met``) from its ``final_returns``."""
    stats = summarize_final_returns(row["final_returns"], resamples)
    target = row.get("target")
    return {
        **{f"final_return_{k}": v for k, v in stats.items()},
        "target_met": None if target is None else bool(stats["iqm"] >= target),
    }


def _finite_returns(row: Mapping[str, Any]) -> np.ndarray:
    x = np.array([_num(v) for v in row.get("final_returns") or []], dtype=np.float64)
    return x[np.isfinite(x)]


def _score_matrix(rows: Mapping[str, dict], names: list[str],
                  scale: Mapping[str, float] | None = None) -> tuple[np.ndarray, bool]:
    """(runs, games) of the rows ``names`` (one per game, in order), each
    divided by ``scale[env]`` if given: the first n finite seeds of each row,
    n the fewest any row has (rliable's bootstrap wants as many runs per
    game); also whether a row was cut to n."""
    columns = [_finite_returns(rows[name]) for name in names]
    n = min(len(c) for c in columns)
    scores = np.stack([c[:n] for c in columns], axis=1)
    if scale is not None:
        scores = scores / np.array([scale[rows[name]["env"]] for name in names])
    return scores, any(len(c) > n for c in columns)


def _missing(rows: Mapping[str, dict], names: list[str]) -> list[str]:
    """The names among ``names`` with no row, or a row without a finite final return."""
    return [name for name in names if name not in rows or _finite_returns(rows[name]).size == 0]


def _games(rows: Mapping[str, dict], suffixes: tuple[str, ...]) -> list[str]:
    """MINATAR_GAMES, then each of MINATAR_OPTIONAL_GAMES whose rows ``game + suffix`` all exist."""
    return list(MINATAR_GAMES) + [g for g in MINATAR_OPTIONAL_GAMES
                                  if not _missing(rows, [g + suffix for suffix in suffixes])]


def _holds(config: Mapping[str, Any], settings: Mapping[str, Any]) -> bool:
    """Whether a row's stored ``config`` has every field of ``settings``
    (lists read back from JSON compared as tuples)."""
    as_stored = lambda v: tuple(v) if isinstance(v, list) else v
    return all(as_stored(config.get(k)) == v for k, v in settings.items())


def baseline_row(rows: Mapping[str, dict], game: str) -> str:
    """The name of the row that scores PureJaxRL's settings on ``game``:
    ``<game>+BASELINE_LABEL``, or the preset's own row where the preset holds
    those settings (`purejaxppo.presets.PUREJAXRL_MINATAR`), so that it has
    no separate baseline; the first name when neither row is there."""
    from purejaxppo.presets import PUREJAXRL_MINATAR

    name = f"{game}+{BASELINE_LABEL}"
    if name not in rows and game in rows and _holds(rows[game].get("config", {}), PUREJAXRL_MINATAR):
        return game
    return name


def aggregates(rows: Mapping[str, dict], resamples: int = BOOTSTRAP_RESAMPLES,
               seed: int = BOOTSTRAP_SEED) -> dict:
    """The MinAtar aggregates of the table's rows (JSON-ready; a pure function
    of ``rows``):

    * ``normalised_iqm[set]``, for the presets (``"presets"``: rows named by
      env id) and the baselines (``"+purejaxrl"``: rows ``<env>+BASELINE_LABEL``,
      or the preset's row where the preset holds PureJaxRL's settings,
      `baseline_row`):
      the IQM over all seeds of all games of score / MINATAR_REFERENCE[game],
      with rliable's stratified-bootstrap CI (seeds resampled within each
      game), over the games of `_games` that have a reference score;
    * ``probability_of_improvement``: P(a preset's run beats a baseline run
      of the same game) averaged over the games of `_games` (rliable's
      ``metrics.probability_of_improvement``: no normalisation needed), with
      rliable's stratified-bootstrap CI (each set's seeds resampled on their
      own, within each game).

    Where a row is missing, that entry lists it under ``missing`` and its
    values are None.
    """
    _, metrics = _rliable()
    baseline = f"+{BASELINE_LABEL}"
    out: dict[str, Any] = {
        "reference_scores": dict(MINATAR_REFERENCE),
        "left_out": {g: "no gymnax-blines PPO reference score"
                     for g in (*MINATAR_GAMES, *MINATAR_OPTIONAL_GAMES) if g not in MINATAR_REFERENCE},
        "resamples": resamples, "seed": seed, "confidence": CONFIDENCE,
        "normalised_iqm": {},
    }
    row_name = {PRESETS_SET: lambda g: g, baseline: lambda g: baseline_row(rows, g)}
    for set_name, suffix in ((PRESETS_SET, ""), (baseline, baseline)):
        games = [g for g in _games(rows, (suffix,)) if g in MINATAR_REFERENCE]
        names = [row_name[set_name](g) for g in games]
        entry = {"rows": names, "games": games, "missing": _missing(rows, names),
                 "seeds_per_game": None, "cut": None, "iqm": None, "ci95": None}
        if not entry["missing"]:
            scores, entry["cut"] = _score_matrix(rows, names, MINATAR_REFERENCE)
            entry["seeds_per_game"] = scores.shape[0]
            entry["iqm"], entry["ci95"] = interval_estimate(scores, metrics.aggregate_iqm, resamples, seed)
        out["normalised_iqm"][set_name] = entry

    games = _games(rows, ("", baseline))
    x_names, y_names = games, [baseline_row(rows, g) for g in games]
    poi = {"x": PRESETS_SET, "y": baseline, "games": games, "missing": _missing(rows, x_names + y_names),
           "seeds_per_game": None, "cut": None, "value": None, "ci95": None}
    if not poi["missing"]:
        x, cut_x = _score_matrix(rows, x_names)
        y, cut_y = _score_matrix(rows, y_names)
        poi["seeds_per_game"], poi["cut"] = [x.shape[0], y.shape[0]], cut_x or cut_y
        poi["value"], poi["ci95"] = interval_estimate((x, y), metrics.probability_of_improvement,
                                                      resamples, seed)
    out["probability_of_improvement"] = poi
    return out


# ------------------------------------------------------------------ presets
def available_presets() -> dict:
    """Every benchmarkable name: ``PRESETS`` (env id -> Preset), then ``BASELINES``."""
    from purejaxppo import presets

    return {**presets.PRESETS, **getattr(presets, "BASELINES", {})}


def quick_config(config):
    """The smoke-run version of ``config``: at most QUICK_MAX_ENVS x QUICK_MAX_STEPS,
    QUICK_UPDATES updates, and the largest ``num_minibatches`` up to the
    preset's that divides the smaller batch."""
    num_envs = min(config.num_envs, QUICK_MAX_ENVS)
    num_steps = min(config.num_steps, QUICK_MAX_STEPS)
    batch_size = num_envs * num_steps
    num_minibatches = max(d for d in range(1, config.num_minibatches + 1) if batch_size % d == 0)
    return config.replace(num_envs=num_envs, num_steps=num_steps, num_minibatches=num_minibatches,
                          total_timesteps=QUICK_UPDATES * batch_size)


# -------------------------------------------------------------- child side
def run_preset(name: str, seeds: int, quick: bool, eval_episodes: int, env_devices: int = 1) -> dict:
    """Train and score preset ``name`` in this process; return its row. With
    ``env_devices`` > 1, each seed's envs split over that many devices
    (`make_train`'s ``env_devices``), the seeds vmapped over the split run."""
    import purejaxppo  # noqa: F401  (XLA guard before jax starts)
    import jax

    from purejaxppo import make_train
    from purejaxppo.evaluation import final_return, make_evaluate
    from timing import compile_timed, run_timed

    preset = available_presets()[name]
    config = preset.config()
    if quick:
        config = quick_config(config)

    keys = jax.random.split(jax.random.PRNGKey(TRAIN_SEED), seeds)
    train = make_train(config, env_devices=env_devices if env_devices > 1 else None)
    compiled, compile_s = compile_timed(jax.vmap(train), keys)
    result, run_s, _ = run_timed(compiled, keys, repeats=1)
    episode_return = np.asarray(result.metrics["episode_return"])
    final_returns = final_return({"episode_return": episode_return}, window=FINAL_WINDOW)

    # Greedy evaluation of every seed's final policy, all seeds in one call.
    state = result.train_state
    evaluate = make_evaluate(config, eval_episodes)
    eval_keys = jax.random.split(jax.random.PRNGKey(EVAL_SEED), seeds)
    eval_args = (state.params, eval_keys) + ((state.obs_norm,) if hasattr(state, "obs_norm") else ())
    start = time.perf_counter()
    eval_returns = np.asarray(jax.block_until_ready(jax.jit(jax.vmap(evaluate))(*eval_args)))
    eval_s = time.perf_counter() - start
    eval_per_seed = eval_returns.mean(axis=-1)

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from throughput import device_name

    steps_per_seed = config.num_updates * config.batch_size
    target = preset.target
    device = jax.devices()[0]
    return {
        "env": preset.env_name,
        "label": row_name(name, env_devices),
        "env_devices": env_devices,
        "seeds": seeds,
        "budget": config.total_timesteps,
        "env_steps_per_seed": steps_per_seed,
        "num_updates": config.num_updates,
        "config": dataclasses.asdict(config),
        "source": preset.source,
        "target": target,
        "final_returns": final_returns.tolist(),  # the parent adds their statistics (row_statistics)
        "eval_episodes": eval_episodes,
        "eval_returns": eval_per_seed.tolist(),
        "eval_return_mean": float(np.mean(eval_per_seed)),
        "compile_s": compile_s,
        "run_s": run_s,
        "wall_s": compile_s + run_s,
        "eval_s": eval_s,
        "steps_per_s": seeds * steps_per_seed / run_s,
        "curve": learning_curve(episode_return, config.batch_size),
        "quick": quick,
        "device": device_name(),
        "backend": jax.default_backend(),
        "device_kind": getattr(device, "device_kind", "") or device.platform,
        "jax": jax.__version__,
        "date": time.strftime("%Y-%m-%d"),
    }


def git_commit() -> str | None:
    """The checkout's commit (with ``+dirty`` if purejaxppo/ has uncommitted
    changes): which code a row of the table was measured on; None outside git."""
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, text=True,
                              capture_output=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "purejaxppo"], cwd=root,
                               text=True, capture_output=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("+dirty" if dirty else "")


def _probe_device() -> None:
    """Print the device name (as throughput.py names it) for the parent process."""
    import purejaxppo  # noqa: F401  (XLA guard before jax starts)

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from throughput import device_name

    print("DEVICE " + device_name())


def row_name(name: str, env_devices: int) -> str:
    """A row's name: the preset's, marked when its envs were split over devices
    (so that such a row never replaces the preset's own)."""
    return name if env_devices <= 1 else f"{name} (envs over {env_devices} devices)"


def _spawn(cmd_args: list[str], marker: str, timeout: float, env_devices: int = 1) -> str:
    """Run this script with ``cmd_args``; return the text after ``marker`` on
    stdout. With ``env_devices`` > 1 the child gets that many CPU devices (on
    a CPU; a GPU or TPU backend has its own), each on one thread, as the
    CLI's ``--env-devices`` gives them."""
    cmd = [sys.executable, str(Path(__file__).resolve()), *cmd_args]
    env = None
    if env_devices > 1:
        from purejaxppo.platform.cpu_threads import ENV_VAR as THREADS_VAR
        from purejaxppo.platform.cpu_devices import ENV_VAR as DEVICES_VAR

        env = {**os.environ, DEVICES_VAR: str(env_devices), THREADS_VAR: "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    for line in proc.stdout.splitlines():
        if line.startswith(marker):
            return line[len(marker):]
    raise RuntimeError(f"exit status {proc.returncode}:\n{proc.stderr[-4000:]}")


# -------------------------------------------------------------- parent side
def _row_order(rows: Mapping[str, dict]) -> list[str]:
    """Row names in the order of ``available_presets()``, unknown (stale) names last."""
    order = {name: i for i, name in enumerate(available_presets())}
    return sorted(rows, key=lambda name: (order.get(name, len(order)), name))


RET = ".4g"  # returns in the table: 4 significant digits (500, -83.64, 0.9961)


def _fmt(value: Any, spec: str = ".1f") -> str:
    value = _num(value)
    return "n/a" if math.isnan(value) else format(value, spec)


def markdown_table(rows: Mapping[str, dict], meta: dict) -> str:
    """The returns table of every row, with the machine and the commands that made it."""
    commands = sorted({r["command"] for r in rows.values() if r.get("command")})
    lines = [
        f"# Returns on {meta['device']}",
        "",
        f"{meta['machine']}; jax {meta['jax']}, backend {meta['backend']}. "
        f"Final return per seed = mean episode return over the last {FINAL_WINDOW} updates; "
        f"IQM over seeds (rliable's `aggregate_iqm`, the 25% trimmed mean: the plain mean below 4 seeds) "
        f"with rliable's stratified-bootstrap {CONFIDENCE:.0%} CI (`get_interval_estimates`, percentile, "
        f"{BOOTSTRAP_RESAMPLES:,} resamples, NumPy seeded with {BOOTSTRAP_SEED} for each CI), "
        "recomputed from each row's per-seed final returns whenever the table is written; "
        "the target is met when the IQM reaches it. Greedy eval = mean over seeds of the mean return "
        "of greedy episodes. Compile timed apart from the one run of the compiled call (all seeds vmapped). "
        "Commit: the code a row was measured on (— for rows from before it was recorded).",
        "",
        "Commands: " + "; ".join(f"`{c}`" for c in commands) + ".",
        "",
        "| env | seeds | budget | final return mean | IQM [95% CI] | greedy eval mean | target | compile s | run s | wall s | commit |",
        "|---|---:|---:|---:|---|---:|---|---:|---:|---:|---|",
    ]
    for name in _row_order(rows):
        r = rows[name]
        low, high = r["final_return_iqm_ci95"]
        if r["target"] is None:
            target = "—"
        else:
            target = f"{r['target']:g} {'met' if r['target_met'] else 'MISSED'}"
        nan_note = f" ({r['final_return_nan_seeds']} NaN)" if r.get("final_return_nan_seeds") else ""
        lines.append(
            f"| {name} | {r['seeds']}{nan_note} | {r['budget']:,} | {_fmt(r['final_return_mean'], RET)} "
            f"| {_fmt(r['final_return_iqm'], RET)} [{_fmt(low, RET)}, {_fmt(high, RET)}] "
            f"| {_fmt(r['eval_return_mean'], RET)} "
            f"| {target} | {_fmt(r['compile_s'])} | {_fmt(r['run_s'])} | {_fmt(r['wall_s'])} "
            f"| {r.get('commit') or '—'} |"
        )
    return "\n".join(lines) + "\n"


def _game(name: str) -> str:
    return name.removesuffix("-MinAtar")


def _cut_note(entry: Mapping[str, Any]) -> str:
    return " (the first seeds of each row: rows differ in seed count)" if entry.get("cut") else ""


def markdown_aggregates(agg: Mapping[str, Any], profile: str | None = None) -> str:
    """The "Aggregates" section of the table, from `aggregates`' result; ``profile``:
    the file name of the performance profile PNG, if one was drawn."""
    ref = agg["reference_scores"]
    fmt = lambda v: _fmt(v, ".3g")
    lines = [
        "## Aggregates",
        "",
        "MinAtar, scores normalised per game: final return / reference score, the reference being the best "
        "published PPO final return at 1e7 env steps in gymnax-blines (docs/lcurves.png, the best of its "
        "three learning rates): " + ", ".join(f"{g} {v:g}" for g, v in ref.items()) + ". "
        + "".join(f"{g} is left out of the normalised aggregate and the profile: {why}. "
                  for g, why in agg["left_out"].items())
        + f"IQM over all seeds of all games with rliable's stratified-bootstrap {agg['confidence']:.0%} CI "
        f"(seeds resampled within each game; {agg['resamples']:,} resamples, NumPy seeded with {agg['seed']}).",
        "",
        "| rows | games | seeds per game | normalised IQM [95% CI] |",
        "|---|---|---:|---|",
    ]
    for set_name, e in agg["normalised_iqm"].items():
        label = ("presets (rows named by env id)" if set_name == PRESETS_SET else
                 f"PureJaxRL's settings: {', '.join(f'`{n}`' for n in e['rows'])}")
        games = ", ".join(map(_game, e["games"]))
        if e["missing"]:
            lines.append(f"| {label} | {games} | — | not computed: missing {', '.join(e['missing'])} |")
        else:
            low, high = e["ci95"]
            lines.append(f"| {label} | {games} | {e['seeds_per_game']}{_cut_note(e)} "
                         f"| {fmt(e['iqm'])} [{fmt(low)}, {fmt(high)}] |")
    poi = agg["probability_of_improvement"]
    lines += [
        "",
        f"Probability of improvement of the presets over PureJaxRL's settings (the `<env>{poi['y']}` rows, "
        "or the preset's own row where the preset holds those settings, which counts 0.5 there): "
        "P(a preset's final return > a baseline run's on the same game), averaged over "
        f"{', '.join(map(_game, poi['games']))} (rliable's `probability_of_improvement`, on the raw returns), "
        f"with rliable's stratified-bootstrap {agg['confidence']:.0%} CI (each set's seeds resampled on "
        "their own within each game): "
        + (f"not computed: missing {', '.join(poi['missing'])}." if poi["missing"] else
           f"**{poi['value']:.3g}** [{poi['ci95'][0]:.3g}, {poi['ci95'][1]:.3g}] "
           f"({poi['seeds_per_game'][0]} vs {poi['seeds_per_game'][1]} seeds per game{_cut_note(poi)})."),
    ]
    if profile:
        lines += ["", "Performance profile: the fraction of runs (seeds x games) whose normalised score "
                      f"exceeds τ, with rliable's stratified-bootstrap {agg['confidence']:.0%} bands "
                      f"({PROFILE_RESAMPLES:,} resamples).", "",
                  f"![MinAtar performance profile]({profile})"]
    return "\n".join(lines) + "\n"


def plot_profile(agg: Mapping[str, Any], rows: Mapping[str, dict], path: Path) -> bool:
    """The MinAtar performance profile (rliable's ``create_performance_profile``
    and ``plot_utils.plot_performance_profiles``) of every set in ``agg`` with
    its rows present, to ``path``; False, drawing nothing, without matplotlib
    or without such a set."""
    scores = {}
    for set_name, e in agg["normalised_iqm"].items():
        if not e["missing"]:
            label = "presets" if set_name == PRESETS_SET else f"<env>{set_name}"
            scores[f"{label} ({e['seeds_per_game']} seeds per game)"] = _score_matrix(
                rows, e["rows"], MINATAR_REFERENCE)[0]
    if not scores or importlib.util.find_spec("matplotlib") is None:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from rliable import library, plot_utils

    top = max(1.5, max(float(s.max()) for s in scores.values()) * 1.05)
    taus = np.linspace(0.0, top, 201)
    with _numpy_seeded(agg["seed"]):
        profiles, cis = library.create_performance_profile(scores, taus, reps=PROFILE_RESAMPLES)
    fig, ax = plt.subplots(figsize=(6, 4))
    plot_utils.plot_performance_profiles(
        profiles, taus, performance_profile_cis=cis, ax=ax,
        colors={label: f"C{i}" for i, label in enumerate(scores)},
        xlabel=r"normalised score $\tau$ (return / gymnax-blines PPO)",
        ylabel=r"fraction of runs with score $> \tau$", labelsize="medium", ticklabelsize="small")
    games = ", ".join(_game(g) for g in next(e for e in agg["normalised_iqm"].values() if not e["missing"])["games"])
    ax.set_title(f"MinAtar ({games}): performance profile", fontsize="medium")
    ax.axvline(1.0, color="0.4", ls=":", lw=0.9)
    ax.legend(fontsize="small", loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _plot_rows(ax, rows: list[tuple[str, dict]], legend: str | None) -> None:
    """Median curve with the 25-75% band of each row on ``ax``, one colour per row,
    and the targets as dotted lines; a legend in font size ``legend`` unless None."""
    for i, (name, r) in enumerate(rows):
        c = r["curve"]
        x = np.asarray(c["env_steps"], dtype=float)
        color = f"C{i}"
        ax.plot(x, np.array(c["median"], dtype=float), color=color, lw=1.2,
                label=f"{name} ({r['seeds']} seeds)")
        ax.fill_between(x, np.array(c["p25"], dtype=float), np.array(c["p75"], dtype=float),
                        color=color, alpha=0.25, lw=0)
    for target in sorted({r["target"] for _, r in rows if r.get("target") is not None}):
        ax.axhline(target, color="0.4", ls=":", lw=0.9, label=f"target {target:g}")
    ax.grid(alpha=0.3)
    if legend:
        ax.legend(fontsize=legend)


def _rows_by_env(rows: Mapping[str, dict]) -> dict[str, list[tuple[str, dict]]]:
    """Env -> its rows, the PRESETS row (label == env) first, then the baselines."""
    by_env: dict[str, list[tuple[str, dict]]] = {}
    for name in _row_order(rows):
        by_env.setdefault(rows[name]["env"], []).append((name, rows[name]))
    for env, items in by_env.items():
        items.sort(key=lambda item: item[0] != env)
    return by_env


def _seeds_text(items: list[tuple[str, dict]]) -> str:
    """"8 seeds", or "8/3 seeds" when the rows of one plot differ."""
    return "/".join(dict.fromkeys(str(r["seeds"]) for _, r in items)) + " seeds"


def _safe_filename(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-")


def plot_curves(rows: Mapping[str, dict], out_dir: Path, stem: str, device: str) -> list[Path]:
    """One learning-curve PNG per env and one grid of all envs; return the paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_env = _rows_by_env(rows)
    paths = []
    for env, items in by_env.items():
        fig, ax = plt.subplots(figsize=(6, 4))
        _plot_rows(ax, items, legend="small")
        ax.set(xlabel="env steps (per seed)", ylabel="episode return",
               title=f"{env}, {_seeds_text(items)}: median and 25-75% over seeds")
        fig.tight_layout()
        path = out_dir / f"{stem}-{_safe_filename(env)}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)

    ncols = min(4, len(by_env))
    nrows = math.ceil(len(by_env) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(max(3.2 * ncols, 6.4), 2.6 * nrows + 0.4),
                             squeeze=False)
    for ax, (env, items) in zip(axes.flat, by_env.items()):
        _plot_rows(ax, items, legend="xx-small" if len(items) > 1 else None)
        ax.set_title(f"{env}, {_seeds_text(items)}", fontsize="small")
        ax.tick_params(labelsize="x-small")
        ax.xaxis.get_offset_text().set_fontsize("x-small")
    for ax in list(axes.flat)[len(by_env):]:
        ax.set_visible(False)
    fig.suptitle(f"purejaxppo returns on {device}: median and 25-75% over seeds, x = env steps",
                 fontsize="medium")
    fig.tight_layout()
    path = out_dir / f"{stem}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    paths.append(path)
    return paths


def _load_rows(json_path: Path) -> dict:
    """Rows of an existing results JSON ({} if none); a clear error if unreadable."""
    if not json_path.exists():
        return {}
    try:
        return json.loads(json_path.read_text())["rows"]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise SystemExit(f"{json_path} exists but is not a returns results file ({err}); "
                         "move it aside so it is not overwritten") from err


def write_results(rows: dict, out_dir: Path, stem: str, meta: dict) -> None:
    """The JSON of all rows with the aggregates, the markdown table and the
    PNGs, regenerated from ``rows``. Each row's statistics are recomputed from
    its ``final_returns`` first (`row_statistics`; in place)."""
    for row in rows.values():
        if row.get("final_returns") is not None:
            row.update(row_statistics(row))
    agg = aggregates(rows)
    profile = out_dir / f"{stem}-minatar-profile.png"
    drawn = plot_profile(agg, rows, profile)
    if not drawn:
        profile.unlink(missing_ok=True)  # never a stale profile beside a table without one
    (out_dir / f"{stem}.json").write_text(
        json.dumps(json_safe({"meta": meta, "rows": rows, "aggregates": agg}), indent=1))
    (out_dir / f"{stem}.md").write_text(
        markdown_table(rows, meta) + "\n" + markdown_aggregates(agg, profile.name if drawn else None))
    if rows:
        plot_curves(rows, out_dir, stem, meta["device"])


def _machine_name() -> str:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from throughput import machine_name

    return machine_name()


def _rewrite_table(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """--table-only: the existing JSON's rows, their statistics and the
    aggregates recomputed, written back with the md and the PNGs."""
    if args.presets or args.seeds is not None or args.env_devices != 1:
        parser.error("--table-only trains nothing: it takes only --out-dir, --quick and --device")
    device = args.device or _spawn(["--probe-device"], "DEVICE ", timeout=600)
    stem = f"returns-{device}" + ("-quick" if args.quick else "")
    json_path = args.out_dir / f"{stem}.json"
    if not json_path.exists():
        raise SystemExit(f"{json_path}: no such results file (--table-only rewrites an existing one)")
    rows = _load_rows(json_path)
    meta = json.loads(json_path.read_text()).get("meta", {"device": device})
    write_results(rows, args.out_dir, stem, meta)
    print(f"rewrote {args.out_dir / stem}.{{json,md}} and {stem}*.png from {len(rows)} rows")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", metavar="NAME",
                        help="keys of presets.PRESETS or presets.BASELINES (default: all of PRESETS)")
    parser.add_argument("--seeds", type=int, help="seeds per preset (default: each preset's benchmark_seeds)")
    parser.add_argument("--quick", action="store_true",
                        help=f"smoke run: {QUICK_UPDATES} tiny updates, {QUICK_SEEDS} seeds, -quick files")
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    parser.add_argument("--eval-episodes", type=int, default=16, help="greedy episodes per seed")
    parser.add_argument("--timeout", type=int, default=4 * 3600, help="seconds per preset")
    parser.add_argument("--env-devices", type=int, default=1,
                        help="split each seed's envs over this many devices (make_train's "
                             "env_devices; on a CPU, that many CPU devices); its rows are named "
                             "'<preset> (envs over N devices)'")
    parser.add_argument("--table-only", action="store_true",
                        help="train nothing: recompute the statistics and aggregates of the existing "
                             "JSON and rewrite it, the md and the PNGs (with --quick: the smoke run's)")
    parser.add_argument("--device", help="with --table-only: the device whose table to rewrite, as in "
                                         "returns-<device>.json (default: this machine's)")
    parser.add_argument("--child-preset", help=argparse.SUPPRESS)
    parser.add_argument("--probe-device", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.probe_device:
        return _probe_device()
    if args.child_preset:
        row = run_preset(args.child_preset, args.seeds, args.quick, args.eval_episodes,
                         args.env_devices)
        print("RESULT " + json.dumps(json_safe(row)))
        return

    _rliable()  # a missing or broken rliable stops here, before any training
    if args.table_only:
        return _rewrite_table(parser, args)
    if args.device:
        parser.error("--device goes with --table-only (a run measures this machine's device)")

    import purejaxppo  # noqa: F401  (XLA guard before jax starts; inherited by the children)
    from purejaxppo import presets

    # Everything is checked before anything compiles.
    allowed = available_presets()
    names = list(dict.fromkeys(args.presets or presets.PRESETS))
    unknown = [n for n in names if n not in allowed]
    if unknown:
        parser.error(f"unknown preset(s) {unknown}; allowed: {', '.join(map(repr, allowed))}")
    if args.seeds is not None and args.seeds < 1:
        parser.error(f"--seeds must be >= 1, got {args.seeds}")
    if args.eval_episodes < 1:
        parser.error(f"--eval-episodes must be >= 1, got {args.eval_episodes}")
    if args.env_devices < 1:
        parser.error(f"--env-devices must be >= 1, got {args.env_devices}")

    device = _spawn(["--probe-device"], "DEVICE ", timeout=600)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"returns-{device}" + ("-quick" if args.quick else "")
    json_path = args.out_dir / f"{stem}.json"
    _load_rows(json_path)  # an unreadable file stops the run here, before any training
    command = "python " + shlex.join(["benchmarks/returns.py", *sys.argv[1:]])

    failed = []
    for name in names:
        seeds = args.seeds or (QUICK_SEEDS if args.quick else allowed[name].benchmark_seeds)
        child = ["--child-preset", name, "--seeds", str(seeds), "--eval-episodes", str(args.eval_episodes),
                 "--env-devices", str(args.env_devices)]
        try:
            row = json.loads(_spawn(child + (["--quick"] if args.quick else []), "RESULT ", args.timeout,
                                    args.env_devices))
        except (RuntimeError, subprocess.TimeoutExpired) as err:
            print(f"{name}: FAILED ({err})", file=sys.stderr, flush=True)
            failed.append(name)
            continue
        row["command"] = command
        row["commit"] = git_commit()
        rows = _load_rows(json_path)  # re-read: another invocation may have added rows meanwhile
        rows[row_name(name, args.env_devices)] = row
        meta = {
            "device": device,
            "backend": row["backend"],
            "device_kind": row["device_kind"],
            "jax": row["jax"],
            "machine": _machine_name(),
            "xla_flags": os.environ.get("XLA_FLAGS", ""),
            "quick": args.quick,
        }
        write_results(rows, args.out_dir, stem, meta)  # after each preset: a long run keeps what is done
        low, high = row["final_return_iqm_ci95"]
        target = "" if row["target"] is None else (
            f"  target {row['target']:g} {'met' if row['target_met'] else 'MISSED'}")
        print(f"{name:40s} {seeds:3d} seeds  IQM {_fmt(row['final_return_iqm'], '8.1f')} "
              f"[{_fmt(low)}, {_fmt(high)}]  eval {_fmt(row['eval_return_mean'], '8.1f')}{target}  "
              f"compile {row['compile_s']:6.1f} s  run {row['run_s']:8.1f} s  "
              f"{row['steps_per_s']:>10,.0f} steps/s", flush=True)

    if len(failed) < len(names):
        print(f"wrote {args.out_dir / stem}.{{json,md}} and {stem}*.png")
    if failed:
        raise SystemExit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
