"""Learning curves from run directories: read a run's metrics, plot runs together.

A run directory (``python -m purejaxppo --run-dir RUN``) holds the run's
``config.json`` (its `PPOConfig`, the command line's arguments) and
``metrics.csv`` (one row per logged update and seed). `read_run` reads both
into a `Run` of NumPy arrays, one ``(num_seeds, num_logged_updates)`` array
per metric; `plot_runs` draws each run's median over seeds with its
interquartile band against env steps, one figure for several runs, labelled
by what differs between their configs (`run_labels`).

Only the csv module and NumPy read the files; matplotlib is imported when a
figure is drawn, and draws to a PNG file without a display.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from purejaxppo.checkpoint import config_from_json, config_to_json
from purejaxppo.config import PPOConfig

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.csv"
# The columns every metrics.csv starts with; the metrics follow them.
INDEX_COLUMNS = ("update", "env_steps", "seed", "wall_time")


@dataclasses.dataclass(frozen=True)
class Run:
    """One run directory, read by `read_run`.

    Attributes:
        directory: the run directory.
        config: the run's `PPOConfig`.
        metrics: each metric of metrics.csv (and ``wall_time``), shape
            ``(num_seeds, num_logged_updates)``, ordered by update; NaN where
            the run logged none (e.g. no episode finished).
        updates: the logged update numbers, shape ``(num_logged_updates,)``,
            increasing.
        env_steps: env steps done by each logged update, shape
            ``(num_logged_updates,)``.
    """

    directory: Path
    config: PPOConfig
    metrics: dict[str, np.ndarray]
    updates: np.ndarray
    env_steps: np.ndarray

    @property
    def num_seeds(self) -> int:
        """The seeds the run trained together."""
        return next(iter(self.metrics.values())).shape[0]


def _hint(run_dir: Path) -> str:
    return (f"is {run_dir} a run directory? (python -m purejaxppo --run-dir {run_dir} ...)")


def read_config(run_dir: str | os.PathLike) -> PPOConfig:
    """The `PPOConfig` in ``run_dir/config.json`` (its ``"config"`` entry)."""
    run_dir = Path(run_dir)
    path = run_dir / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: {_hint(run_dir)}")
    try:
        document = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path} is not readable JSON: {error}") from None
    if not isinstance(document, dict) or not isinstance(document.get("config"), dict):
        raise ValueError(f"{path} has no \"config\" object; allowed: "
                         '{"config": {...}, "args": {...}, "argv": [...]}')
    try:
        return config_from_json(document["config"])
    except (TypeError, ValueError) as error:
        raise ValueError(f"{path} holds no valid PPOConfig: {error}") from None


def _number(text: str, path: Path, line: int, column: str, kind: type) -> Any:
    try:
        value = kind(text)
    except ValueError:
        allowed = "an int" if kind is int else "a number (nan, inf and -inf allowed)"
        raise ValueError(f"{path} line {line}: {column}={text!r}; allowed: {allowed}") from None
    return value


def read_metrics(run_dir: str | os.PathLike):
    """``run_dir/metrics.csv`` as ``(updates (U,), env_steps (U,), metrics)``,
    each metric of shape ``(num_seeds, U)``, ordered by update whatever the
    order of the rows. Every logged update must have one row per seed
    ``0 .. num_seeds-1``; where an update has two rows for a seed (a resumed
    run reports again the updates after its checkpoint), the later wins."""
    run_dir = Path(run_dir)
    path = run_dir / METRICS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: {_hint(run_dir)}")
    try:
        with open(path, newline="") as file:
            rows = list(csv.reader(file))
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise ValueError(f"{path} is not a readable CSV file: {error}") from None
    if not rows or tuple(rows[0][: len(INDEX_COLUMNS)]) != INDEX_COLUMNS:
        got = rows[0] if rows else "nothing"
        raise ValueError(f"{path} header is {got!r}; allowed: "
                         f"{','.join(INDEX_COLUMNS)},<metric names>")
    header = rows[0]
    names = header[len(INDEX_COLUMNS):]
    if not names or len(set(header)) != len(header):
        raise ValueError(f"{path} header {header!r} must name each metric once after "
                         f"{','.join(INDEX_COLUMNS)}")
    if len(rows) == 1:
        raise ValueError(f"{path} has a header and no rows: the run has logged no update yet")
    values: dict[tuple[int, int], list[float]] = {}
    steps: dict[int, int] = {}
    for line, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise ValueError(f"{path} line {line} has {len(row)} fields; the header has {len(header)}")
        update = _number(row[0], path, line, "update", int)
        env_steps = _number(row[1], path, line, "env_steps", int)
        seed = _number(row[2], path, line, "seed", int)
        if seed < 0:
            raise ValueError(f"{path} line {line}: seed={seed}; allowed: an int >= 0")
        # A second row for an update and seed: a resumed run reported it again
        # (the first was after its last checkpoint); the later row wins.
        if steps.setdefault(update, env_steps) != env_steps:
            raise ValueError(f"{path} line {line}: env_steps={env_steps} for update {update}, "
                             f"another row of it has {steps[update]}")
        values[(update, seed)] = [_number(text, path, line, name, float)
                                  for text, name in zip(row[3:], header[3:])]
    updates = np.array(sorted(steps), dtype=np.int64)
    num_seeds = max(seed for _, seed in values) + 1
    missing = [(u, s) for u in updates for s in range(num_seeds) if (int(u), s) not in values]
    if missing:
        update, seed = missing[0]
        raise ValueError(f"{path} has no row for update {update}, seed {seed} "
                         f"({len(missing)} missing of {len(updates) * num_seeds}); every logged "
                         f"update needs one row per seed 0..{num_seeds - 1}")
    table = np.array([[values[(int(u), s)] for u in updates] for s in range(num_seeds)],
                     dtype=np.float64)  # (num_seeds, U, columns)
    metrics = {name: table[:, :, i] for i, name in enumerate(header[3:])}
    env_steps = np.array([steps[int(u)] for u in updates], dtype=np.int64)
    return updates, env_steps, metrics


def read_run(run_dir: str | os.PathLike) -> Run:
    """``run_dir``'s config and metrics as a `Run` (see `read_config`,
    `read_metrics` for what each file must hold)."""
    config = read_config(run_dir)
    updates, env_steps, metrics = read_metrics(run_dir)
    return Run(directory=Path(run_dir), config=config, metrics=metrics,
               updates=updates, env_steps=env_steps)


def seed_summary(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Median, 25th and 75th percentile over seeds of ``values``
    ``(num_seeds, U)``, each ``(U,)``. Non-finite values (NaN: nothing
    logged; +-inf: a diverged seed) are left out; an update with no finite
    value gives NaN, without a warning."""
    values = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(values)
    some = finite.any(axis=0)
    out = np.full((3, values.shape[1]), np.nan)
    if some.any():
        kept = np.where(finite, values, np.nan)[:, some]
        out[:, some] = np.nanpercentile(kept, [50, 25, 75], axis=0)
    return out[0], out[1], out[2]


def _format(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return "(" + ",".join(_format(v) for v in value) + ")"
    return str(value)


def _label_fields(config: PPOConfig) -> dict[str, Any]:
    """A config's fields as JSON values, with ``env_params`` and
    ``env_kwargs`` spread out into their own keys."""
    fields = config_to_json(config)
    for group in ("env_kwargs", "env_params"):
        for key, value in fields.pop(group):
            fields[key] = value
    return fields


def run_labels(runs: Sequence[Run]) -> list[str]:
    """A legend label per run: its env name, then ``field=value`` for each
    config field (or env parameter) whose value differs between ``runs``, in
    the config's field order (``"default"`` for an env parameter a run left
    at its default). Runs whose configs are the same get their directory's
    name added, so that every label is distinct."""
    fields = [_label_fields(run.config) for run in runs]
    names = list(dict.fromkeys(name for f in fields for name in f))
    differ = [n for n in names if n != "env_name"
              and len({json.dumps(f.get(n, "default")) for f in fields}) > 1]
    labels = [" ".join([run.config.env_name]
                       + [f"{n}={_format(f.get(n, 'default'))}" for n in differ])
              for run, f in zip(runs, fields)]
    return [f"{label} ({run.directory.name})" if labels.count(label) > 1 else label
            for label, run in zip(labels, runs)]


def plot_runs(
    run_dirs: Sequence[str | os.PathLike] | str | os.PathLike,
    metric: str = "episode_return",
    out: str | os.PathLike = "curves.png",
    title: str | None = None,
) -> Path:
    """Plot ``metric`` of each run in ``run_dirs`` against env steps into the
    PNG ``out`` (its directory created); return its path.

    Each run is one line, its median over seeds, and a shaded band from the
    25th to the 75th percentile (`seed_summary`); the legend labels come
    from `run_labels`. ``metric`` must be a column of every run's
    metrics.csv.
    """
    if isinstance(run_dirs, (str, os.PathLike)):
        run_dirs = [run_dirs]
    if len(run_dirs) == 0:
        raise ValueError("run_dirs is empty; allowed: one or more run directories")
    runs = [read_run(d) for d in run_dirs]
    allowed = [name for name in runs[0].metrics if all(name in r.metrics for r in runs[1:])]
    if metric not in allowed:
        raise ValueError(f"metric={metric!r} is not in the runs' metrics; allowed: {allowed}")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    # A Figure on the Agg canvas: no display, no pyplot state, nothing left open.
    figure = Figure(figsize=(7.0, 4.5), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for run, label in zip(runs, run_labels(runs)):
        median, low, high = seed_summary(run.metrics[metric])
        (line,) = axes.plot(run.env_steps, median, label=label, linewidth=1.5)
        axes.fill_between(run.env_steps, low, high, color=line.get_color(), alpha=0.25,
                          linewidth=0)
    seeds = sorted({run.num_seeds for run in runs})
    axes.set_xlabel("env steps")
    axes.set_ylabel(metric)
    axes.set_title(title if title is not None else
                   f"{metric}: median and 25-75% over {'/'.join(map(str, seeds))} seed(s)")
    axes.grid(alpha=0.3)
    axes.legend(loc="best", fontsize="small")
    figure.tight_layout()
    figure.savefig(out, format="png")
    return out


def draw_schedule(ax, values: np.ndarray, lineage: np.ndarray, batch_size: int, name: str) -> None:
    """One explored hyperparameter of a population on ``ax``: each member's
    value at every update (``values``, (P, updates), thin lines) and the
    values along one member's ``lineage`` ((updates,), the member whose
    state it carried at each update: `purejaxppo.pbt.lineage`) in bold,
    against env steps per member; a log scale where every value is > 0."""
    values = np.asarray(values, np.float64)
    steps = (np.arange(values.shape[1]) + 1) * batch_size
    for m in range(values.shape[0]):
        ax.plot(steps, values[m], lw=0.7, alpha=0.55, color=f"C{m % 10}")
    ax.plot(steps, values[np.asarray(lineage), np.arange(values.shape[1])], color="k", lw=2.0,
            label="the best member's lineage")
    if np.all(values > 0):
        ax.set_yscale("log")
    ax.set(xlabel="env steps per member", ylabel=name)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="x-small")


def plot_schedules(schedules: dict[str, np.ndarray], lineage: np.ndarray, batch_size: int,
                   out: str | os.PathLike, title: str) -> Path:
    """`draw_schedule` for each field of ``schedules`` (name -> (P, updates)),
    side by side, into the PNG ``out``; return its path."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    out = Path(out)
    figure = Figure(figsize=(4.2 * len(schedules), 3.4), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, len(schedules), squeeze=False)[0]
    for ax, (name, values) in zip(axes, schedules.items()):
        draw_schedule(ax, values, lineage, batch_size, name)
    figure.suptitle(title, fontsize="medium")
    figure.tight_layout()
    figure.savefig(out)
    return out
