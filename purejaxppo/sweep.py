"""Hyperparameter grids: every point x every seed in one compiled call.

The numeric `PPOConfig` fields travel into the compiled program as the traced
`HyperParams`, so a grid over them needs no recompilation: ``G`` points and
``S`` seeds are ``G * S`` runs of one `jax.vmap`, split over the devices
like seeds (`purejaxppo.devices.shard_seeds`). Every point trains with the
same ``S`` keys (common random numbers: the points differ in their
hyperparameters only).

    >>> grid = parse_grid(["lr=1e-4,3e-4,1e-3", "clip_eps=0.1,0.2"])
    >>> result = run_sweep(config, grid_points(grid), num_seeds=4)
    >>> result.metrics["episode_return"].shape        # (points, seeds, updates)
    (6, 4, 976)
    >>> table = rank_points(result)                   # best IQM first

Fields that shape the program (``num_envs``, ``update_epochs``, the network
...) are static: a grid over them would be one compile per point, and is
refused with the list of the fields a grid may take.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import time
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from purejaxppo.config import HYPERPARAM_FIELDS, PPOConfig
from purejaxppo.evaluation import final_return
from purejaxppo.hyperparams import HyperParams
from purejaxppo.statistics import summarize_final_returns
from purejaxppo.train import TrainResult, make_train


def parse_grid(items: Sequence[str]) -> dict[str, tuple[float, ...]]:
    """``["lr=1e-4,3e-4", "clip_eps=0.1,0.2"]`` as ``{"lr": (1e-4, 3e-4),
    "clip_eps": (0.1, 0.2)}``, in the order given. A `ValueError` names the
    item and what is allowed: ``FIELD=V1,V2,...`` with a `HyperParams` field,
    each once, and numbers."""
    grid: dict[str, tuple[float, ...]] = {}
    allowed = ", ".join(HYPERPARAM_FIELDS)
    for item in items:
        name, sep, text = item.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or not name:
            raise ValueError(f"--grid item {item!r}; allowed: FIELD=V1,V2,... (e.g. lr=1e-4,3e-4)")
        if name not in HYPERPARAM_FIELDS:
            static = name in {f.name for f in dataclasses.fields(PPOConfig)}
            why = (" is a static field (it shapes the compiled program, so a grid over it would "
                   "compile once per point; run one command per value)") if static else " is not a field"
            raise ValueError(f"--grid {name}{why}; allowed fields: {allowed}")
        if name in grid:
            raise ValueError(f"--grid names {name} twice; give each field once, its values comma-separated")
        try:
            values = tuple(float(v) for v in text.split(","))
        except ValueError:
            raise ValueError(f"--grid {item!r}: the values must be numbers, comma-separated") from None
        if len(set(values)) != len(values):
            raise ValueError(f"--grid {item!r} repeats a value")
        grid[name] = values
    if not grid:
        raise ValueError("--grid needs at least one FIELD=V1,V2,... item")
    return grid


def grid_points(grid: dict[str, Sequence[float]]) -> list[dict[str, float]]:
    """Every combination of ``grid``'s values, as ``{field: value}`` dicts
    (the last field varies fastest)."""
    names = list(grid)
    return [dict(zip(names, values)) for values in itertools.product(*(grid[n] for n in names))]


def point_label(point: dict[str, float]) -> str:
    """``lr=0.0003,clip_eps=0.2``: a point's name (and its directory's)."""
    return ",".join(f"{name}={value:g}" for name, value in point.items())


def points_hparams(config: PPOConfig, points: Sequence[dict[str, float]]) -> HyperParams:
    """``config``'s hyperparameters with each point's values: leaves (G,),
    NumPy float32 (so checking a grid starts no JAX backend), checked
    against each field's range (`HyperParams.validate`)."""
    if not points:
        raise ValueError("a sweep needs at least one point")
    columns = {name: np.full(len(points), getattr(config, name), np.float32) for name in HYPERPARAM_FIELDS}
    for i, point in enumerate(points):
        for name, value in point.items():
            columns[name][i] = value
    return HyperParams(**columns).validate()


def point_config(config: PPOConfig, point: dict[str, float]) -> PPOConfig:
    """``config`` with ``point``'s values: the config one point's runs are
    (what its run directory records)."""
    return config.replace(**point)


@dataclasses.dataclass(frozen=True)
class SweepResult:
    """What `run_sweep` returns.

    Attributes:
        config: the base `PPOConfig`.
        points: the grid's points, ``{field: value}`` each.
        result: the runs' `TrainResult`, every leaf with leading axes
            (points, seeds).
        final_returns: (points, seeds), the mean ``episode_return`` over each
            run's last 10 updates (`purejaxppo.evaluation.final_return`).
        compile_s, run_s: compile time and the compiled call's time.
    """

    config: PPOConfig
    points: list[dict[str, float]]
    result: TrainResult
    final_returns: np.ndarray
    compile_s: float
    run_s: float

    @property
    def metrics(self) -> dict[str, np.ndarray]:
        return self.result.metrics


def run_sweep(config: PPOConfig, points: Sequence[dict[str, float]], num_seeds: int, seed: int = 0,
              devices: Sequence[Any] | None = None) -> SweepResult:
    """Train every point of ``points`` with ``num_seeds`` seeds (keys
    ``split(PRNGKey(seed), num_seeds)``, the same for every point) in one
    compiled call over the ``G * S`` runs, split over ``devices`` (default:
    all, as many as divide the runs). A grid that cannot fit in the
    devices' memory is refused before it compiles
    (`purejaxppo.memory.check_memory`)."""
    from purejaxppo.devices import largest_divisor_at_most, shard_seeds
    from purejaxppo.distributed import to_host
    from purejaxppo.memory import check_memory

    if isinstance(num_seeds, bool) or not isinstance(num_seeds, int) or num_seeds < 1:
        raise ValueError(f"num_seeds = {num_seeds!r}; allowed: an int >= 1")
    points = [dict(p) for p in points]
    hp = points_hparams(config, points)
    g, s = len(points), num_seeds
    keys = jax.random.split(jax.random.PRNGKey(seed), s)
    flat_keys = shard_seeds(jnp.tile(keys, (g, 1)), devices)  # run r: point r // s, seed r % s
    flat_hp = shard_seeds(jax.tree.map(lambda x: jnp.repeat(x, s), hp), devices)
    trainer = make_train(config)
    count = len(jax.devices()) if devices is None else len(devices)
    check_memory(trainer, runs_per_device=g * s // largest_divisor_at_most(g * s, count))  # before compiling
    train = jax.jit(jax.vmap(trainer))
    start = time.perf_counter()
    compiled = train.lower(flat_keys, flat_hp).compile()
    compile_s = time.perf_counter() - start
    start = time.perf_counter()
    flat = jax.block_until_ready(compiled(flat_keys, flat_hp))
    run_s = time.perf_counter() - start
    unflatten = lambda x: np.asarray(x).reshape((g, s) + np.shape(x)[1:])
    result = TrainResult(train_state=jax.tree.map(unflatten, to_host(flat.train_state)),
                         metrics={k: unflatten(v) for k, v in to_host(flat.metrics).items()})
    return SweepResult(config=config, points=points, result=result,
                       final_returns=final_return(result.metrics), compile_s=compile_s, run_s=run_s)


def rank_points(sweep: SweepResult) -> list[dict[str, Any]]:
    """One row per point, the highest IQM of its seeds' final returns first:
    ``point``, ``label``, ``index`` (its place in ``sweep.points``) and the
    statistics of `purejaxppo.statistics.summarize_final_returns` (``iqm``,
    ``iqm_ci95``, ``mean``, ``median``, ``nan_seeds``), ``final_returns``,
    and ``diverged``: where its first seed went NaN or infinite
    (`purejaxppo.divergence.first_nonfinite`, as text), else None."""
    from purejaxppo.divergence import first_nonfinite

    rows = []
    for i, point in enumerate(sweep.points):
        finals = sweep.final_returns[i]
        divergence = first_nonfinite({"nonfinite": sweep.metrics["nonfinite"][i]})
        rows.append({"index": i, "point": point, "label": point_label(point),
                     **summarize_final_returns(finals), "final_returns": [float(v) for v in finals],
                     "diverged": None if divergence is None else str(divergence)})
    score = lambda row: row["iqm"] if math.isfinite(row["iqm"]) else -math.inf
    return sorted(rows, key=score, reverse=True)
